import torch
import torch.nn.functional as F

from siamdyn.data.augment import AugmentParams, BatchAugment, resized_crop, sample_crop_boxes


def ramp_images(n=4, h=12, w=10):
    """Pixel value encodes position: easy to check where a crop came from."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return (y * w + x).expand(n, 1, h, w).clone()


def test_resized_crop_matches_interpolate_of_the_box():
    imgs = ramp_images()
    boxes = torch.tensor([[0, 0, 12, 10], [2, 3, 5, 4], [7, 6, 5, 4], [1, 1, 9, 7]])
    out = resized_crop(imgs, boxes, (8, 8))
    for k, (t, left, h, w) in enumerate(boxes.tolist()):
        expected = F.interpolate(imgs[k:k + 1, :, t:t + h, left:left + w], size=(8, 8), mode="bilinear",
                                 align_corners=False)
        torch.testing.assert_close(out[k:k + 1], expected, atol=1e-4, rtol=0)


def test_identity_box_is_identity_and_flip_mirrors():
    imgs = ramp_images(2, 6, 6)
    boxes = torch.tensor([[0, 0, 6, 6], [0, 0, 6, 6]])
    out = resized_crop(imgs, boxes, (6, 6), flip=torch.tensor([False, True]))
    torch.testing.assert_close(out[0], imgs[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1], imgs[1].flip(-1), atol=1e-4, rtol=0)


def test_crop_boxes_respect_scale_ratio_and_bounds():
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(5000, 28, 28, (0.2, 1.0), (3 / 4, 4 / 3), g)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    area = (h * w).float() / 28 ** 2
    # Rounding of h and w lets the area stray a little outside the scale range.
    assert area.min() > 0.15 and area.max() <= 1.0
    assert area.mean() > 0.45 and area.mean() < 0.75  # scale is uniform on [0.2, 1]
    ratio = w.float() / h.float()
    assert ratio.min() > 0.6 and ratio.max() < 1.6


def test_impossible_ratio_falls_back_to_central_crop():
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(3, 10, 10, (1.0, 1.0), (3.0, 4.0), g)  # wide crops cannot fit at full area
    for t, left, h, w in boxes.tolist():
        assert (h, w) == (3, 10) and (t, left) == (3, 0)  # width kept, height = 10 / 3 rounded, centred


def _augment(c=1):
    return BatchAugment(AugmentParams(), torch.zeros(c), torch.ones(c))


def test_augment_is_deterministic_under_a_seed_and_varies_across_seeds():
    imgs = (torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    aug = _augment(3)
    aug.p.blur_p = 0.5
    a = aug(imgs, torch.Generator().manual_seed(7))
    b = aug(imgs, torch.Generator().manual_seed(7))
    c = aug(imgs, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == imgs.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and torch.isfinite(a).all()


def test_jitter_off_and_full_crop_reproduce_the_input():
    imgs = (torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    p = AugmentParams(crop_scale_min=1.0, crop_scale_max=1.0, crop_ratio_min=1.0, crop_ratio_max=1.0, flip_p=0.0,
                      jitter_p=0.0)
    out = BatchAugment(p, torch.zeros(1), torch.ones(1))(imgs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, imgs.float() / 255, atol=1e-5, rtol=0)


def test_brightness_scales_pixels():
    imgs = torch.full((64, 1, 8, 8), 100, dtype=torch.uint8)
    p = AugmentParams(crop_scale_min=1.0, crop_scale_max=1.0, crop_ratio_min=1.0, crop_ratio_max=1.0, flip_p=0.0,
                      jitter_p=1.0, contrast=0.0)
    out = BatchAugment(p, torch.zeros(1), torch.ones(1))(imgs, torch.Generator().manual_seed(0))
    factors = out[:, 0, 0, 0] / (100 / 255)
    assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5 and factors.std() > 0.1
    # A flat image stays flat: brightness multiplies every pixel by one factor.
    assert (out.flatten(1).std(1) < 1e-5).all()
