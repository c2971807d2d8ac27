"""Backbones by name, custom modules, the small-image stem, input channels and the projection head."""
import pytest
import torch
from torch import nn

from lightning_transfer.errors import UserInputError
from lightning_transfer.models.vision import ProjectionHead, build_backbone


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("convnet", 256)])
def test_named_backbones_give_features_of_their_dimension(name, dim):
    net, feature_dim = build_backbone(name, in_channels=3, small_images=True)
    assert feature_dim == dim
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_small_image_stem_keeps_resolution_and_one_channel_input_works():
    small, _ = build_backbone("resnet18", in_channels=1, small_images=True)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.in_channels == 1
    assert isinstance(small.maxpool, nn.Identity)
    imagenet, _ = build_backbone("resnet18", in_channels=1, small_images=False)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.in_channels == 1
    # the 3x3/1 stem sees 4x more positions in layer1 than the 7x7/2 + pool stem
    taps = {}

    def record(name):
        def hook(module, inputs, output):
            taps[name] = output.shape
        return hook

    small.layer1.register_forward_hook(record("small"))
    imagenet.layer1.register_forward_hook(record("imagenet"))
    small.eval()(torch.randn(1, 1, 32, 32)), imagenet.eval()(torch.randn(1, 1, 32, 32))
    assert taps["small"][-1] == 32 and taps["imagenet"][-1] == 8


def test_custom_module_backbone_needs_feature_dim():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    module, dim = build_backbone(net, feature_dim=7)
    assert module is net and dim == 7
    with pytest.raises(UserInputError, match="feature_dim"):
        build_backbone(net)


def test_unknown_backbone_is_one_clear_error():
    with pytest.raises(UserInputError, match="unknown backbone 'resnet19'.*resnet18"):
        build_backbone("resnet19")


def test_projection_head_shape_and_batchnorm_between_layers():
    head = ProjectionHead(512, hidden_dim=64, output_dim=16, num_layers=3)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.randn(5, 512)).shape == (5, 16)
