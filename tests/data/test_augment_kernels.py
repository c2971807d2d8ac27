"""The batched kernels of the SimCLR augmentation against torchvision's single-image kernels, one
parameter per sample."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from lightning_transfer.data._augment_kernels import (
    adjust_brightness_,
    adjust_contrast_,
    adjust_hue_,
    adjust_saturation_,
    gaussian_blur,
    resized_crop,
    rgb_to_grayscale_,
    sample_resized_crop_boxes,
    solarize_,
)
from tests.helpers.images import float_images, uint8_images

# Float32 kernels vs torchvision's float32 kernels: only summation order differs.
TOL = 1e-5


# ---------------------------------------------------------------------------------------------
# The batched kernels against torchvision, one factor per sample
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs, factors",
    [
        (adjust_brightness_, TF.adjust_brightness, [0.2, 0.7, 1.0, 1.5, 1.8]),
        (adjust_contrast_, TF.adjust_contrast, [0.2, 0.7, 1.0, 1.5, 1.8]),
        (adjust_saturation_, TF.adjust_saturation, [0.2, 0.7, 1.0, 1.5, 1.8]),
        # Hue: no HSV image is built, the formula differs; measured error ~1e-6, so TOL holds too.
        (adjust_hue_, TF.adjust_hue, [-0.5, -0.2, 0.0, 0.13, 0.5]),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
@pytest.mark.parametrize("channels", [3, 1])
def test_color_op_matches_torchvision_per_sample(ours, theirs, factors, channels):
    images = float_images(5, channels, 17, 23)
    out = ours(images.clone(), torch.tensor(factors))
    expected = torch.stack([theirs(images[i], f) for i, f in enumerate(factors)])
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)


def test_hue_rotation_by_a_third_of_a_turn_permutes_channels():
    images = float_images(2, 3, 9, 9)
    out = adjust_hue_(images.clone(), 1 / 3)
    torch.testing.assert_close(out, images[:, [2, 0, 1]], atol=TOL, rtol=0)  # red -> green -> blue


def test_grayscale_matches_torchvision_and_keeps_three_channels():
    images = float_images(3, 3, 11, 7)
    out = rgb_to_grayscale_(images.clone())
    torch.testing.assert_close(out, TF.rgb_to_grayscale(images, num_output_channels=3), atol=TOL, rtol=0)


def test_solarize_matches_torchvision():
    images = float_images(2, 3, 8, 8)
    torch.testing.assert_close(solarize_(images.clone()), TF.solarize(images, 0.5), atol=0, rtol=0)


@pytest.mark.parametrize("channels, height, width, kernel", [(3, 40, 57, 23), (1, 32, 32, 3), (3, 70, 33, 9)])
def test_gaussian_blur_matches_torchvision_per_sample_sigma(channels, height, width, kernel):
    images = float_images(3, channels, height, width)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    out = gaussian_blur(images, sigma, kernel)
    expected = torch.stack([TF.gaussian_blur(image, [kernel, kernel], [s, s]) for image, s in zip(images, sigma.tolist())])
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)
    in_place = images.clone()
    gaussian_blur(in_place, sigma, kernel, out=in_place)
    torch.testing.assert_close(in_place, expected, atol=TOL, rtol=0)


def test_resized_crop_matches_torchvision_crop_resize_and_flip():
    images = uint8_images(4, 3, 30, 41)
    boxes = torch.tensor([[0, 0, 30, 41], [3, 5, 10, 17], [10, 2, 20, 8], [29, 40, 1, 1]])
    flip = torch.tensor([False, True, False, True])
    out = resized_crop(images, boxes, 16, flip)
    for i in range(4):
        expected = TF.resized_crop(images[i].float() / 255, *boxes[i].tolist(), [16, 16], antialias=False)
        torch.testing.assert_close(out[i], expected.flip(-1) if flip[i] else expected, atol=TOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Crop box statistics
# ---------------------------------------------------------------------------------------------


def test_crop_boxes_follow_torchvision_random_resized_crop_distribution():
    n, height, width = 3000, 48, 64
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = sample_resized_crop_boxes(n, height, width, scale, ratio, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert ((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1) & (top + h <= height) & (left + w <= width)).all()
    area = (h * w).double() / (height * width)
    # rounding of the sides moves the area by at most about one pixel row/column
    assert area.min() >= scale[0] - 2 * (height + width) / (height * width) and area.max() <= 1.0

    torch.manual_seed(0)
    image = torch.zeros(1, height, width)
    ref = torch.tensor([RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)])
    ref_area = (ref[:, 2] * ref[:, 3]).double() / (height * width)
    standard_error = math.sqrt(area.var() / n + ref_area.var() / n)
    assert abs(area.mean() - ref_area.mean()) < 4 * standard_error
    aspect, ref_aspect = (w / h).double().log(), (ref[:, 3] / ref[:, 2]).double().log()
    assert abs(aspect.mean() - ref_aspect.mean()) < 4 * math.sqrt(aspect.var() / n + ref_aspect.var() / n)
    # the box centre is uniform over the valid offsets: mean offset matches too
    ref_top = ref[:, 0].double()
    assert abs(top.double().mean() - ref_top.mean()) < 4 * math.sqrt(top.double().var() / n + ref_top.var() / n)


def test_crop_falls_back_to_torchvisions_centre_crop_when_no_try_fits():
    # A 4:1 strip with ratio (1, 1) and full scale: no square of the full area fits.
    boxes = sample_resized_crop_boxes(5, 10, 40, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    expected = RandomResizedCrop.get_params(torch.zeros(1, 10, 40), [1.0, 1.0], [1.0, 1.0])
    assert boxes.tolist() == [list(expected)] * 5 == [[0, 15, 10, 10]] * 5
