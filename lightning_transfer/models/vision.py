"""Image encoders and the SimCLR projection head.

:func:`build_backbone` turns a name (``resnet18``/``resnet34``/``resnet50`` from torchvision, or the
small ``convnet`` for quick CPU runs) or any ``nn.Module`` into an encoder that maps
``B x C x H x W`` images to ``B x feature_dim`` features.

:func:`set_memory_format` and :func:`to_memory_format` lay out a conv backbone's filters and its input
images in ``channels_last`` (NHWC) memory, an implementation setting: the same numbers (within float
rounding), computed faster by oneDNN/cuDNN convolutions (ResNet-18 at 32 px, fp32, 2 CPU threads:
1.05-1.3x, depending on the CPU).
State dicts stay contiguous, so checkpoints and exports are the same in either layout.
"""

from __future__ import annotations

import itertools
from typing import cast

import torch
from torch import nn

from lightning_transfer.errors import UserInputError

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")
BACKBONES = (*TORCHVISION_RESNETS, "convnet")
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _set_input_stem(net: nn.Module, in_channels: int, small_images: bool) -> None:
    """Replace the ResNet stem: ``small_images`` swaps the 7x7/2 conv + max-pool for a 3x3/1 conv
    and no pool (SimCLR's CIFAR variant); ``in_channels != 3`` rebuilds the first conv, keeping
    pretrained filters by averaging over their RGB inputs."""
    old = cast(nn.Conv2d, net.conv1)  # torchvision ResNets: conv1 is an nn.Conv2d
    if small_images:
        net.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != old.in_channels:
        conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        net.conv1 = conv1
        with torch.no_grad():
            conv1.weight.copy_(old.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))


def _torchvision_resnet(name: str, in_channels: int, small_images: bool, weights: str | None) -> tuple[nn.Module, int]:
    import torchvision

    try:
        net = getattr(torchvision.models, name)(weights=weights)
    except ValueError as err:  # unknown weights enum name
        raise UserInputError(f"unknown torchvision weights {weights!r} for {name}: {err}") from None
    except OSError as err:  # download failed (offline)
        raise UserInputError(
            f"could not download torchvision weights {weights!r} for {name} ({err}); "
            "use pretrained_weights=null offline, or put the file in $TORCH_HOME/hub/checkpoints"
        ) from None
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    _set_input_stem(net, in_channels, small_images)
    return net, feature_dim


class ConvNet(nn.Module):
    """A small VGG-style CNN (4 stages of conv-BN-ReLU, widths ``width * (1, 2, 4, 8)``, 2x2 pool
    between stages, global average pool). For quick CPU runs and tests on small images, where a
    ResNet-18 is an order of magnitude slower."""

    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, multiplier in enumerate((1, 2, 4, 8)):
            out = width * multiplier
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if stage < 3:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images)).flatten(1)


def build_backbone(
    backbone: str | nn.Module = "resnet18",
    in_channels: int = 3,
    small_images: bool = False,
    pretrained_weights: str | None = None,
    feature_dim: int | None = None,
    width: int = 32,
) -> tuple[nn.Module, int]:
    """Return ``(encoder, feature_dim)``.

    - ``backbone``: a name in :data:`BACKBONES`, or any ``nn.Module`` mapping images to
      ``B x feature_dim`` (then ``feature_dim`` is required unless the module has a
      ``feature_dim`` attribute; ``in_channels``/``small_images`` are the module's business).
    - ``small_images``: 3x3 stride-1 first conv and no max-pool (for 28-64 px inputs).
    - ``pretrained_weights``: torchvision weights name such as ``"IMAGENET1K_V1"`` (downloaded by
      torchvision; offline this raises a clear error). Random init when ``None``.
    - ``width``: channel width of the ``convnet`` backbone only.
    """
    if isinstance(backbone, nn.Module):
        dim = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
        if dim is None:
            raise UserInputError(
                f"a custom backbone {type(backbone).__name__} needs its output size: pass feature_dim=<int> "
                "or give the module a feature_dim attribute"
            )
        return backbone, int(dim)
    name = str(backbone).lower()
    if name in TORCHVISION_RESNETS:
        return _torchvision_resnet(name, in_channels, small_images, pretrained_weights)
    if name == "convnet":
        if pretrained_weights:
            raise UserInputError("the convnet backbone has no pretrained weights; set pretrained_weights=null")
        net = ConvNet(in_channels, width)
        return net, net.feature_dim
    raise UserInputError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)} or pass an nn.Module")


class ProjectionHead(nn.Module):
    """SimCLR's projection MLP g(h): ``num_layers`` linear layers, BatchNorm + ReLU between them
    (and BatchNorm without affine shift after the last one when ``last_bn``, as in SimCLR v2).
    Dimensions: ``input_dim -> hidden_dim -> ... -> output_dim``. The loss is computed on g(h); the
    representation kept for transfer is h."""

    def __init__(
        self, input_dim: int, hidden_dim: int = 2048, output_dim: int = 128, num_layers: int = 2, last_bn: bool = False
    ):
        super().__init__()
        if num_layers < 1:
            raise UserInputError(f"projection head needs num_layers >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            last = i == num_layers - 1
            layers.append(nn.Linear(d_in, d_out, bias=last and not last_bn))
            if not last:
                layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
            elif last_bn:
                layers.append(nn.BatchNorm1d(d_out, affine=False))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def resolve_memory_format(name: str) -> torch.memory_format:
    """The torch memory format named ``name``: ``"channels_last"`` (NHWC) or ``"contiguous"`` (NCHW).
    Anything else raises :class:`~lightning_transfer.errors.UserInputError`."""
    if name not in MEMORY_FORMATS:
        raise UserInputError(f"unknown memory_format {name!r}; choose one of {', '.join(MEMORY_FORMATS)}")
    return MEMORY_FORMATS[name]


def _contiguous_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """A ``state_dict`` post-hook: this module's tensors contiguous (NCHW), whatever their layout in memory.
    Parameters themselves (``state_dict(keep_vars=True)``) are left as they are."""
    for key, value in list(state_dict.items()):
        if key.startswith(prefix) and not isinstance(value, nn.Parameter) and not value.is_contiguous():
            state_dict[key] = value.contiguous()


def set_memory_format(backbone: nn.Module, name: str) -> torch.memory_format:
    """Lay out the 4-d weights (convolution filters) of ``backbone`` in memory format ``name`` (see
    :func:`resolve_memory_format`), in place, and return that format. Values, parameter names and ``state_dict()``
    do not change: with ``channels_last`` a post-hook returns the weights contiguous, so checkpoints and
    exported files hold the usual NCHW tensors (safetensors needs contiguous ones) and load into a backbone
    of either layout (``load_state_dict`` copies into the existing layout)."""
    fmt = resolve_memory_format(name)
    backbone.to(memory_format=fmt)
    if fmt == torch.channels_last:
        backbone.register_state_dict_post_hook(_contiguous_state)
    return fmt


def to_memory_format(images: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``images`` (``B x C x H x W``) in memory format ``fmt``; returned as they are for
    ``torch.contiguous_format`` (the layout they come in) and when not 4-d."""
    if fmt == torch.contiguous_format or images.dim() != 4:
        return images
    return images.contiguous(memory_format=fmt)
