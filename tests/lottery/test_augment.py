"""Augmentation: random resized crop + flip on uint8 batches, a function of (seed, iteration) only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from ticketlens.lottery.augment import augment_generator, crop_boxes, crop_flip, crop_flip_thetas


def _images(n: int = 6, size: int = 32) -> torch.Tensor:
    return (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)


def _apply(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    n, c, h, w = images.shape
    grid = F.affine_grid(crop_flip_thetas(boxes, flips, h, w), [n, c, h, w], align_corners=False)
    return F.grid_sample(
        images.float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def test_whole_image_box_is_identity_and_flip_mirrors():
    images = _images(2)
    whole = torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 2)
    same = _apply(images, whole, torch.tensor([False, False]))
    mirrored = _apply(images, whole, torch.tensor([True, True]))
    torch.testing.assert_close(same, images.float() / 255, atol=1e-6, rtol=0)
    torch.testing.assert_close(mirrored, images.float().flip(-1) / 255, atol=1e-6, rtol=0)


def test_crop_matches_torchvision_resized_crop_inside_the_border():
    images = _images(1)
    out = _apply(images, torch.tensor([[4.0, 6.0, 16.0, 20.0]]), torch.tensor([True]))
    ref = TF.resized_crop(images.float() / 255, 4, 6, 16, 20, [32, 32], antialias=False).flip(-1)
    # the outermost pixels differ: grid_sample reads the neighbours beyond the crop, interpolate clamps
    torch.testing.assert_close(out[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


def test_boxes_lie_inside_the_image_and_follow_torchvision_random_resized_crop():
    boxes = crop_boxes(5000, 32, 48, augment_generator(0, 0))
    top, left, h, w = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((top + h <= 32).all() and (left + w <= 48).all())
    torch.manual_seed(0)
    reference = torch.tensor(
        [
            RandomResizedCrop.get_params(torch.zeros(3, 32, 48), (0.08, 1.0), (3 / 4, 4 / 3))
            for _ in range(5000)
        ]
    ).double()
    for ours, theirs in (
        (h * w, reference[:, 2] * reference[:, 3]),
        (w / h, reference[:, 3] / reference[:, 2]),
    ):
        # same distribution: means within 4 standard errors of each other
        assert abs(float(ours.mean() - theirs.mean())) < 4 * float(theirs.std()) / 5000**0.5 * 2**0.5


def test_same_seed_and_iteration_same_bytes_other_iteration_other_batch():
    images = _images()
    a, b = crop_flip(images, 5, 17), crop_flip(images.clone(), 5, 17)
    assert torch.equal(a, b)
    assert not torch.equal(a, crop_flip(images, 5, 18))
    assert not torch.equal(a, crop_flip(images, 6, 17))
    assert a.dtype == torch.float32 and float(a.min()) >= 0 and float(a.max()) <= 1


def test_runs_on_the_device_of_its_batch():
    out = crop_flip(torch.zeros(4, 3, 16, 16, dtype=torch.uint8, device="meta"), 0, 0)
    assert out.device.type == "meta" and out.shape == (4, 3, 16, 16)
