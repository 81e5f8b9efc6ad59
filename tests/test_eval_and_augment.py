"""Evaluation modes and the training augmentation, against small cases computed by hand.

Each test uses a "model" or an image whose answer depends on position, so that a mode that does
not do its job (a flip not un-flipped, windows overwritten instead of averaged, scales ignored,
a label not flipped or cropped with its image, padding given a class) gives a different result.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.datasets import IGNORE_INDEX, PAD_RGB, RandomScaleCropFlip
from danet.prediction import predict_probs, sliding_window
from pipeline.evaluate import confusion_matrix, metrics_from_confusion


class RampModel(nn.Module):
    """Two-class logits (x[:, 0] + a·column, 0): position-dependent, so flips and windows show."""

    def __init__(self, a=0.7):
        super().__init__()
        self.a = a

    def forward(self, x):
        col = torch.arange(x.shape[3], dtype=x.dtype).expand_as(x[:, 0])         # (B, H, W)
        logit0 = x[:, 0] + self.a * col                                         # (B, H, W)
        return (torch.stack([logit0, torch.zeros_like(logit0)], dim=1),)      # ((B, 2, H, W),)


def probs(model, x):
    return torch.softmax(model(x)[0], dim=1)


def test_flip_averages_the_unflipped_prediction_of_the_flipped_image():
    x = torch.randn(1, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    model = RampModel()
    expected = (probs(model, x) + probs(model, x.flip(3)).flip(3)) / 2                 # by hand
    got = predict_probs(model, x, flip=True)
    assert torch.allclose(got, expected, atol=1e-6)
    not_unflipped = (probs(model, x) + probs(model, x.flip(3))) / 2
    assert not torch.allclose(got, not_unflipped, atol=1e-3), "the case must tell the two apart"


def test_sliding_windows_average_where_they_overlap():
    """W = 6, crop 4, stride 2: windows at columns 0-3 and 2-5; columns 2, 3 are seen twice."""
    x = torch.randn(1, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    model = RampModel()
    left, right = probs(model, x[..., 0:4]), probs(model, x[..., 2:6])                # (1, 2, 4, 4) each
    expected = torch.empty(1, 2, 4, 6)
    expected[..., 0:2] = left[..., 0:2]
    expected[..., 2:4] = (left[..., 2:4] + right[..., 0:2]) / 2
    expected[..., 4:6] = right[..., 2:4]
    got = sliding_window(model, x, crop=4, stride=2)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(predict_probs(model, x, mode="sliding", crop=4, stride=2), expected, atol=1e-6)
    assert not torch.allclose(left[..., 2:4], right[..., 0:2], atol=1e-3), "overlap must differ between windows"


def test_sliding_window_covers_the_right_edge_and_pads_small_images():
    """W = 7, crop 4, stride 3: windows at 0 and 3 end at column 7, so none extra; H = 2 < crop is padded."""
    x = torch.randn(1, 3, 2, 7, generator=torch.Generator().manual_seed(2))
    model = RampModel()
    xp = F.pad(x, (0, 0, 0, 2))                                                       # (1, 3, 4, 7)
    left, right = probs(model, xp[..., 0:4]), probs(model, xp[..., 3:7])
    expected = torch.cat([left[..., :3], (left[..., 3:4] + right[..., 0:1]) / 2, right[..., 1:]], dim=3)
    assert torch.allclose(sliding_window(model, x, crop=4, stride=3), expected[:, :, :2], atol=1e-6)


def test_multi_scale_averages_every_scale():
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    model = RampModel(a=0.3)
    half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)     # (1, 3, 4, 4)
    back = F.interpolate(probs(model, half), (8, 8), mode="bilinear", align_corners=True)
    expected = (back + probs(model, x)) / 2
    got = predict_probs(model, x, scales=(0.5, 1.0))
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, probs(model, x), atol=1e-3), "a scale must change the answer"
    both = predict_probs(model, x, scales=(0.5, 1.0), flip=True)
    flip_half = F.interpolate(probs(model, half.flip(3)).flip(3), (8, 8), mode="bilinear", align_corners=True)
    assert torch.allclose(both, (back + flip_half + probs(model, x) + probs(model, x.flip(3)).flip(3)) / 4, atol=1e-6)


# --------------------------------------------------------------------------- metrics

def test_absent_classes_are_left_out_of_miou_and_false_positives_count():
    target = np.array([0, 0, 1, 1, 255])
    pred = np.array([0, 2, 1, 1, 3])            # class 2 predicted, never true; class 3 only on ignore
    m = metrics_from_confusion(confusion_matrix(pred, target, 4), ["a", "b", "c", "d"])
    assert m["per_class_iou"] == {"a": 0.5, "b": 1.0, "c": 0.0, "d": None}
    assert m["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)


def test_no_labelled_pixel_gives_nan_not_a_number_that_looks_real():
    m = metrics_from_confusion(confusion_matrix(np.array([1, 0]), np.array([255, 255]), 2))
    assert np.isnan(m["miou"]) and np.isnan(m["pixel_accuracy"]) and m["per_class_iou"] == {"0": None, "1": None}


def test_out_of_range_labels_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0]), np.array([5]), 3)


# --------------------------------------------------------------------------- augmentation

H, W = 20, 30


def coordinate_scene():
    """Image whose red channel is the column, green the row; label = (column + 2·row) % 11."""
    ys, xs = np.mgrid[0:H, 0:W]
    image = np.stack([xs * 5, ys * 7, np.full_like(xs, 50)], axis=-1).astype(np.uint8)  # (H, W, 3)
    label = ((xs + 2 * ys) % 11).astype(np.int64)                                     # (H, W)
    return image, label


def label_from_pixels(image):
    return (np.rint(image[..., 0] / 5) + 2 * np.rint(image[..., 1] / 7)).astype(np.int64) % 11


@pytest.mark.parametrize("seed", range(8))
def test_crop_and_flip_move_the_label_with_the_image(seed):
    image, label = coordinate_scene()
    out_image, out_label = RandomScaleCropFlip(crop_size=12, flip=True)(image, label, np.random.default_rng(seed))
    assert out_image.shape == (12, 12, 3) and out_label.shape == (12, 12)
    np.testing.assert_array_equal(out_label, label_from_pixels(out_image))


def test_flips_happen_and_crops_move():
    image, label = coordinate_scene()
    t = RandomScaleCropFlip(crop_size=12, flip=True)
    firsts = {int(t(image, label, np.random.default_rng(s))[0][0, 0, 0]) for s in range(16)}
    flipped = [t(image, label, np.random.default_rng(s))[0] for s in range(16)]
    assert len(firsts) > 4, "crops should start at many columns"
    assert any(int(im[0, 0, 0]) > int(im[0, -1, 0]) for im in flipped), "no flip in 16 draws"


def test_padding_is_the_mean_colour_and_ignored():
    image, label = coordinate_scene()
    out_image, out_label = RandomScaleCropFlip(crop_size=32, flip=False)(image, label, np.random.default_rng(0))
    assert out_image.shape == (32, 32, 3)
    pad = np.zeros((32, 32), bool)
    pad[H:, :] = True
    pad[:, W:] = True
    assert np.all(out_label[pad] == IGNORE_INDEX), "padding must never be a class"
    assert np.all(out_image[pad] == PAD_RGB)
    np.testing.assert_array_equal(out_label[~pad].reshape(H, W), label)


def test_rescale_keeps_image_and_label_aligned():
    """Bilinear image, nearest label: the label read back from the pixels agrees almost everywhere."""
    ys, xs = np.mgrid[0:H, 0:W]
    image = np.stack([xs * 8, ys * 8, np.zeros_like(xs)], axis=-1).astype(np.uint8)   # smooth ramps
    label = (xs // 6 + 5 * (ys // 5)).astype(np.int64)                                  # 5 x 4 blocks
    t = RandomScaleCropFlip(crop_size=16, scale_range=(0.75, 1.5), flip=True)
    steps = set()
    for seed in range(6):
        im, lb = t(image, label, np.random.default_rng(seed))
        steps.add(round(float(np.abs(np.diff(im[..., 1].astype(float), axis=0)).mean()), 1))  # rows: 8 px apart unscaled
        col, row = np.floor(im[..., 0] / 8 + 0.5).astype(int), np.floor(im[..., 1] / 8 + 0.5).astype(int)
        valid = lb != IGNORE_INDEX
        agree = np.mean((col // 6 + 5 * (row // 5))[valid] == lb[valid])
        assert agree > 0.8, f"seed {seed}: image and label disagree on {1 - agree:.0%} of the pixels"
    assert len(steps) > 3, f"the images were not rescaled (row steps {sorted(steps)})"
