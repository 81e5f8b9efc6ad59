"""The training augmentation, a dataset transform applied to the uint8 image and mapped label."""

import numpy as np
from PIL import Image

from pipeline.datasets.base import IGNORE_INDEX


PAD_RGB = (124, 116, 104)  # the ImageNet mean in uint8: zero after normalisation


class RandomScaleCropFlip:
    """Training augmentation, a dataset transform: random rescale, pad, random crop, random flip.

    In this order, every draw from the item's ``rng``: rescale by s ~ U(scale_range) (bilinear
    image, nearest label); pad bottom/right up to the crop (mean colour, label ``IGNORE_INDEX``, so
    padding is never a class); a random crop_size × crop_size window; a horizontal flip with
    probability 1/2. Image and label always receive the same geometry.
    """

    def __init__(self, crop_size: int | None = None, scale_range: tuple | None = None, flip: bool = True):
        self.crop_size, self.scale_range, self.flip = crop_size, scale_range, flip

    def draw(self, H: int, W: int, rng: np.random.Generator):
        """The random geometry of one H × W sample, in the order :meth:`__call__` draws it:
        ``(scaled size (H', W') or None, crop corner (y, x) or None, flip)``. The device path
        (:mod:`pipeline.device_data`) applies the same draws to tensors."""
        size = corner = None
        if self.scale_range:
            s = rng.uniform(*self.scale_range)
            H, W = max(1, round(H * s)), max(1, round(W * s))
            size = (H, W)
        if self.crop_size:
            c = self.crop_size
            H, W = max(H, c), max(W, c)                                  # after padding up to the crop
            corner = (int(rng.integers(0, H - c + 1)), int(rng.integers(0, W - c + 1)))
        return size, corner, bool(self.flip and rng.random() < 0.5)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        label = label.astype(np.uint8)                                   # (H, W), 255 = ignore
        size, corner, flip = self.draw(*label.shape, rng)
        if size:
            image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))   # PIL: (W, H)
            label = np.asarray(Image.fromarray(label).resize(size[::-1], Image.NEAREST))
        if corner:
            c = self.crop_size
            ph, pw = max(c - image.shape[0], 0), max(c - image.shape[1], 0)
            if ph or pw:
                padded = np.empty((image.shape[0] + ph, image.shape[1] + pw, 3), np.uint8)  # (H + ph, W + pw, 3)
                padded[:] = PAD_RGB
                padded[:image.shape[0], :image.shape[1]] = image
                image = padded
                label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
            y, x = corner
            image, label = image[y:y + c, x:x + c], label[y:y + c, x:x + c]
        if flip:
            image, label = image[:, ::-1], label[:, ::-1]
        return image, label
