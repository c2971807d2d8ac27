"""The SimCLR augmentation recipe: its contract, and every sample against torchvision's kernels
applied one image at a time with the same draws."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from lightning_transfer.data.augment import EvalTransform, SimCLRAugmentation, blur_kernel_size, two_views
from lightning_transfer.errors import UserInputError
from tests.helpers.images import uint8_images

# Every random choice off and the crop the whole (square) image: the augmentation is resize + normalize.
IDENTITY = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
                grayscale_prob=0.0, blur_prob=0.0)
# Float32 kernels vs torchvision's float32 kernels: only summation order differs.
TOL = 1e-5


def normalize(x: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------
# Contract of the module
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, height, width", [(3, 40, 40), (1, 28, 28), (3, 37, 61), (1, 50, 23)])
def test_output_has_requested_shape_float32_dtype_and_normalized_range(channels, height, width):
    augment = SimCLRAugmentation(32, blur_prob=0.5, solarize_prob=0.3)
    out = augment(uint8_images(6, channels, height, width), torch.Generator().manual_seed(0))
    assert out.shape == (6, channels, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6  # [0, 1] normalized by mean = std = 0.5


def test_custom_mean_and_std_map_the_unit_interval_to_the_expected_range():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    augment = SimCLRAugmentation(16, mean=mean, std=std)
    out = augment(uint8_images(8, 3, 20, 20), torch.Generator().manual_seed(1))
    for c in range(3):
        assert out[:, c].min() >= (0 - mean[c]) / std[c] - 1e-5
        assert out[:, c].max() <= (1 - mean[c]) / std[c] + 1e-5


def test_identical_images_in_a_batch_get_different_augmentations():
    augment = SimCLRAugmentation(24, blur_prob=0.5)
    batch = uint8_images(1, 3, 32, 32).expand(8, -1, -1, -1).contiguous()
    out = augment(batch, torch.Generator().manual_seed(0)).flatten(1)
    distances = torch.cdist(out, out) + torch.eye(8) * 1e9
    assert distances.min() > 1e-3  # all 28 pairs differ: one random draw per sample, not per batch


def test_same_generator_seed_reproduces_and_another_seed_differs():
    augment = SimCLRAugmentation(24, blur_prob=0.5, solarize_prob=0.2)
    images = uint8_images(10, 3, 30, 30)
    a = augment(images, torch.Generator().manual_seed(7))
    b = augment(images, torch.Generator().manual_seed(7))
    c = augment(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert (a - c).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every sample changes with the seed


def test_two_views_are_independent_and_reproducible():
    augment = SimCLRAugmentation(16)
    images = uint8_images(4, 3, 20, 20)
    v1, v2 = two_views(augment, images, torch.Generator().manual_seed(3))
    w1, w2 = two_views(augment, images, torch.Generator().manual_seed(3))
    assert v1.shape == v2.shape == (4, 3, 16, 16)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert (v1 - v2).abs().amax(dim=(1, 2, 3)).min() > 1e-3


@pytest.mark.parametrize("source", [20, 48])  # upsampling and downsampling
def test_all_randomness_off_equals_plain_resize_and_normalize(source):
    images = uint8_images(3, 3, source, source)
    out = SimCLRAugmentation(32, **IDENTITY)(images)
    reference = TF.resize(images.float() / 255, [32, 32], antialias=False)  # bilinear, half-pixel centres
    torch.testing.assert_close(out, normalize(reference), atol=TOL, rtol=0)


def test_flip_only_equals_torch_flip():
    images = uint8_images(3, 3, 24, 24)
    out = SimCLRAugmentation(24, **dict(IDENTITY, flip_prob=1.0))(images)
    torch.testing.assert_close(out, normalize(images.flip(-1).float() / 255), atol=TOL, rtol=0)


def test_rotation_of_the_whole_image_matches_torchvision_rotate_per_sample():
    # A dark border (as on digits) so that our border padding and torchvision's zero fill agree.
    images = torch.zeros(6, 1, 24, 24, dtype=torch.uint8)
    images[:, :, 5:19, 6:18] = uint8_images(6, 1, 14, 12)
    augment = SimCLRAugmentation(24, **dict(IDENTITY, rotation=30.0))
    params = augment.sample_params(6, 24, 24, torch.Generator().manual_seed(3))
    out = augment(images, torch.Generator().manual_seed(3))
    degrees = torch.rad2deg(params.angle)
    assert degrees.abs().max() <= 30 and degrees.abs().min() > 0 and len(set(degrees.tolist())) == 6
    for i in range(6):
        expected = TF.rotate(images[i].float() / 255, degrees[i].item(), interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[i], normalize(expected), atol=1e-4, rtol=0, msg=f"sample {i}")


def test_rotation_leaves_every_other_draw_unchanged():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    plain = SimCLRAugmentation(16).sample_params(8, 20, 20, g())
    rotated = SimCLRAugmentation(16, rotation=15.0).sample_params(8, 20, 20, g())
    assert torch.equal(plain.boxes, rotated.boxes) and torch.equal(plain.factors, rotated.factors)
    assert not plain.angle.any() and rotated.angle.abs().max() <= math.radians(15)


def test_full_pipeline_matches_torchvision_applied_sample_by_sample_with_the_same_draws():
    # Every op on, per-sample jitter order, non-square input: the sorting of samples into groups and
    # back must give each sample exactly torchvision's result for its own parameters.
    augment = SimCLRAugmentation(20, jitter_prob=0.7, grayscale_prob=0.4, blur_prob=0.5, solarize_prob=0.3,
                                 mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    images = uint8_images(24, 3, 26, 34)
    params = augment.sample_params(24, 26, 34, torch.Generator().manual_seed(5))
    out = augment(images, torch.Generator().manual_seed(5))
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    k = augment.blur_kernel_size
    for i in range(24):
        top, left, h, w = params.boxes[i].tolist()
        x = TF.resized_crop(images[i].float() / 255, top, left, h, w, [20, 20], antialias=False)
        if params.flip[i]:
            x = x.flip(-1)
        if params.jitter[i]:
            for o in params.order[i].tolist():
                x = ops[o](x, params.factors[i, o].item())
        if params.grayscale[i]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params.blur[i]:
            sigma = params.sigma[i].item()
            x = TF.gaussian_blur(x, [k, k], [sigma, sigma])
        if params.solarize[i]:
            x = TF.solarize(x, 0.5)
        expected = (x - torch.tensor([0.4, 0.5, 0.6])[:, None, None]) / torch.tensor([0.2, 0.3, 0.4])[:, None, None]
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0, msg=f"sample {i}")
    assert params.jitter.any() and params.grayscale.any() and params.blur.any() and params.solarize.any()
    assert len({tuple(o) for o in params.order[params.jitter].tolist()}) > 5  # many different orders


def test_one_channel_jitter_is_brightness_and_contrast_only():
    augment = SimCLRAugmentation(16, **dict(IDENTITY, jitter_prob=1.0, grayscale_prob=1.0))
    images = uint8_images(6, 1, 16, 16)
    params = augment.sample_params(6, 16, 16, torch.Generator().manual_seed(2))
    out = augment(images, torch.Generator().manual_seed(2))
    for i in range(6):
        x = images[i].float() / 255
        for o in params.order[i].tolist():
            if o == 0:
                x = TF.adjust_brightness(x, params.factors[i, 0].item())
            elif o == 1:
                x = TF.adjust_contrast(x, params.factors[i, 1].item())
        torch.testing.assert_close(out[i], normalize(x), atol=TOL, rtol=0)


def test_sample_params_probabilities_and_factor_ranges():
    augment = SimCLRAugmentation(32, flip_prob=0.5, jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5,
                                 solarize_prob=0.1)
    p = augment.sample_params(20000, 32, 32, torch.Generator().manual_seed(0))
    for flag, rate in ((p.flip, 0.5), (p.jitter, 0.8), (p.grayscale, 0.2), (p.blur, 0.5), (p.solarize, 0.1)):
        assert abs(flag.float().mean().item() - rate) < 0.015  # > 4 standard errors
    lo = torch.tensor([0.2, 0.2, 0.2, -0.2])
    hi = torch.tensor([1.8, 1.8, 1.8, 0.2])
    assert ((p.factors >= lo) & (p.factors <= hi)).all()
    assert (p.sigma >= 0.1).all() and (p.sigma <= 2.0).all()
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(20000, 4))  # permutations
    # all 24 orders occur, about equally often
    codes = (p.order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.unique(codes, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 20000 / 24 * 0.8


def test_bad_inputs_raise_user_input_errors():
    augment = SimCLRAugmentation(16)
    with pytest.raises(UserInputError):
        augment(torch.zeros(2, 2, 16, 16, dtype=torch.uint8))  # 2 channels
    with pytest.raises(UserInputError):
        augment(torch.zeros(3, 16, 16, dtype=torch.uint8))  # no batch dimension
    with pytest.raises(UserInputError):
        SimCLRAugmentation(16, hue=0.7)
    with pytest.raises(UserInputError):
        SimCLRAugmentation(16, flip_prob=1.5)
    with pytest.raises(UserInputError):
        SimCLRAugmentation(16, rotation=270.0)
    with pytest.raises(UserInputError):
        SimCLRAugmentation(16, mean=(0.5, 0.5))(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_defaults_are_the_simclr_papers_values():
    """Chen et al. 2020, Appendix A (colour strength 1), as listed in DESIGN.md."""
    augment = SimCLRAugmentation(224)
    assert augment.crop_scale == (0.08, 1.0) and augment.crop_ratio == (3 / 4, 4 / 3)
    assert augment.flip_prob == 0.5
    assert augment.jitter_prob == 0.8 and augment.jitter_strength == (0.8, 0.8, 0.8, 0.2)
    assert augment.grayscale_prob == 0.2
    assert augment.blur_prob == 0.5 and augment.blur_sigma == (0.1, 2.0) and augment.blur_kernel_size == 23
    assert augment.solarize_prob == 0.0 and augment.rotation == 0.0


def test_blur_kernel_size_is_simclrs_ten_percent_rounded_to_odd():
    assert [blur_kernel_size(s) for s in (32, 64, 96, 224)] == [3, 7, 9, 23]



# ---------------------------------------------------------------------------------------------
# Evaluation transform and devices
# ---------------------------------------------------------------------------------------------


def test_eval_transform_normalizes_and_resizes_only_when_needed():
    images = uint8_images(2, 3, 16, 16)
    same = EvalTransform(16, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))(images)
    expected = (images.float() / 255 - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5
    torch.testing.assert_close(same, expected, atol=TOL, rtol=0)
    resized = EvalTransform(24)(images)
    reference = F.interpolate(images.float() / 255, size=(24, 24), mode="bilinear", antialias=True)
    torch.testing.assert_close(resized, normalize(reference), atol=TOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_with_a_cpu_generator_match_the_cpu_result():
    augment = SimCLRAugmentation(32, blur_prob=0.5)
    images = uint8_images(16, 3, 40, 40)
    cpu = augment(images, torch.Generator().manual_seed(0))
    cuda = augment(images.cuda(), torch.Generator().manual_seed(0))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=0)
    own = augment(images.cuda(), torch.Generator(device="cuda").manual_seed(0))  # draws on the GPU
    assert own.shape == cpu.shape and torch.isfinite(own).all()
