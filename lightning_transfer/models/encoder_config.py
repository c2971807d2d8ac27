"""An encoder's architecture record (``encoder_config``): plain values that rebuild it without any class.

- image: ``{"modality": "image", "backbone": <a name in BACKBONES>, "in_channels", "small_images", "width"}``
  (:func:`~lightning_transfer.models.vision.build_backbone`'s arguments);
- text: ``{"modality": "text", <the BertConfig fields>}`` (:class:`~lightning_transfer.models.bert.BertModel`).

:func:`normalize_encoder_config` validates a record and fills its defaults; :func:`build_encoder` builds
a randomly initialized encoder from it. Checkpoint markers, exports and
:class:`~lightning_transfer.modules.finetune.FineTuneModule`'s hyperparameters all hold this record.
Bad records raise :class:`~lightning_transfer.errors.UserInputError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from lightning_transfer.errors import UserInputError, require
from lightning_transfer.models.bert import BertConfig, BertModel
from lightning_transfer.models.vision import BACKBONES, build_backbone

MODALITIES = ("image", "text")
IMAGE_DEFAULTS = {"in_channels": 3, "small_images": False, "width": 32}
BERT_FIELDS = tuple(field.name for field in dataclasses.fields(BertConfig))
"""The BertConfig fields, in its order: the size arguments of BertPretrainModule and a text encoder's record."""


def normalize_encoder_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate an ``encoder_config`` and fill its defaults. ``modality`` may be left out: a config
    with ``backbone`` is an image encoder, one with BERT fields (``hidden_size``...) a text encoder."""
    config = dict(config)
    modality = config.pop("modality", None) or ("image" if "backbone" in config else "text")
    config.pop("kind", None)
    require(modality in MODALITIES, f"encoder_config.modality={modality!r} is not one of {', '.join(MODALITIES)}")
    if modality == "image":
        unknown = sorted(set(config) - {"backbone", *IMAGE_DEFAULTS, "feature_dim"})
        require(
            not unknown,
            f"encoder_config has unknown image keys {unknown}; use backbone, in_channels, small_images, width",
        )
        backbone = config.get("backbone")
        if not (isinstance(backbone, str) and backbone.lower() in BACKBONES):
            raise UserInputError(
                f"encoder_config.backbone={backbone!r} cannot be rebuilt; use one of {', '.join(BACKBONES)}"
            )
        config.pop("feature_dim", None)  # determined by the named backbone
        return {"modality": "image", **IMAGE_DEFAULTS, **config, "backbone": backbone.lower()}
    unknown = sorted(set(config) - set(BERT_FIELDS))
    require(
        not unknown, f"encoder_config has unknown BERT keys {unknown}; use BertConfig fields ({', '.join(BERT_FIELDS)})"
    )
    return {"modality": "text", **BertConfig(**config).to_dict()}


def build_encoder(config: dict[str, Any]) -> tuple[nn.Module, int]:
    """A randomly initialized encoder for an ``encoder_config``: ``(encoder, feature_dim)``.
    Text encoders are :class:`BertModel`; their ``feature_dim`` is ``hidden_size``."""
    config = normalize_encoder_config(config)
    if config["modality"] == "image":
        return build_backbone(
            config["backbone"], config["in_channels"], config["small_images"], None, None, config["width"]
        )
    bert = BertConfig(**{key: config[key] for key in BERT_FIELDS})
    return BertModel(bert), bert.hidden_size
