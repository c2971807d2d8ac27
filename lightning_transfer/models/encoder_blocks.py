"""An encoder cut into blocks, bottom to top: what fine-tuning freezes, unfreezes and decays together.

Partial freezing, gradual unfreezing and layer-wise LR decay
(:class:`~lightning_transfer.modules.finetune.FineTuneModule`) all read the one list
:func:`encoder_blocks` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from torch import nn

from lightning_transfer.models.bert import BertModel
from lightning_transfer.models.vision import ConvNet


@dataclass
class EncoderBlocks:
    """An encoder cut into blocks. ``stem``: the input block (BERT embeddings, the ResNet stem) or
    ``None``; ``layers``: the blocks above it, bottom to top."""

    stem: nn.Module | None
    layers: list[nn.Module]

    @property
    def ordered(self) -> list[nn.Module]:
        """All blocks, bottom (input) to top (features)."""
        return ([self.stem] if self.stem is not None else []) + list(self.layers)


def encoder_blocks(encoder: nn.Module) -> EncoderBlocks:
    """Cut ``encoder`` into the blocks that fine-tuning freezes, unfreezes and decays together.

    - :class:`BertModel`: stem = embeddings; layers = ``encoder.layer[0..N-1]``, the pooler joined
      to the top layer (both are the top of the pretrained network).
    - ResNet (``conv1``, ``bn1``, ``layer1..layer4``): stem = ``conv1`` + ``bn1``; layers =
      ``layer1..layer4``.
    - :class:`ConvNet`: no stem; layers = its four conv-BN-ReLU stages.
    - Anything else: one block, the whole encoder.

    Blocks are views (``nn.ModuleList`` / ``nn.Sequential`` holding the encoder's own submodules):
    freezing one or switching it to eval mode acts on the encoder.
    """
    if isinstance(encoder, BertModel):
        layers: list[nn.Module] = list(encoder.encoder.layer)
        layers[-1] = nn.ModuleList([layers[-1], encoder.pooler])
        return EncoderBlocks(encoder.embeddings, layers)
    if all(hasattr(encoder, name) for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")):
        conv1, bn1, *res_layers = (
            cast(nn.Module, getattr(encoder, name)) for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
        )
        return EncoderBlocks(nn.ModuleList([conv1, bn1]), res_layers)
    if isinstance(encoder, ConvNet):
        stages: list[nn.Module] = []
        current: list[nn.Module] = []
        for module in encoder.features:
            current.append(module)
            if isinstance(module, nn.MaxPool2d):
                stages.append(nn.Sequential(*current))
                current = []
        if current:
            stages.append(nn.Sequential(*current))
        return EncoderBlocks(None, stages)
    return EncoderBlocks(None, [encoder])
