"""The training set held on the training device and augmented there, for a GPU that outruns the CPU.

A DataLoader decodes each PNG and resizes, crops and flips it with PIL on CPU workers; on one H200 a
ResNet-50 DANet at 360 × 360 crops asks for a few hundred images per second, and 16 cores spent on
PIL can fall behind it. :class:`DeviceBatches` instead decodes the split once, keeps every image and
label as uint8 tensors on the device (CamVid's 367 training images: 190 MB) and builds each batch
there, with the geometry of :class:`pipeline.datasets.RandomScaleCropFlip` drawn from the very same
per-sample generator (:meth:`RandomScaleCropFlip.draw`), so a batch holds the same crops and flips
as the CPU path's:

- rescale: bilinear with PIL's antialiasing filter when shrinking (``F.interpolate(...,
  antialias=True)``, rounded to uint8 as PIL rounds; pixel values may differ from PIL's by a level,
  PIL computes in fixed point), labels nearest with PIL's own index rule (:func:`nearest_index`),
  so labels are identical;
- pad bottom/right to the crop with the mean colour and ``IGNORE_INDEX``; crop; flip;
- normalise with the ImageNet mean and std, in float32 as :func:`pipeline.datasets.normalize`.

Works on any torch device (the tests run it on CPU tensors against the CPU transform).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.datasets import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, PAD_RGB, read_image, read_label


def load_split(dataset, device, threads: int = 8) -> tuple[list, list]:
    """Every (image, label) of ``dataset`` decoded once: uint8 (3, H, W) images and uint8 (H, W)
    labels (classes, 255 = ignore) on ``device``."""
    def one(sample):
        image_path, label_path = sample
        image = torch.from_numpy(np.ascontiguousarray(read_image(image_path).transpose(2, 0, 1)))  # (3, H, W)
        label = torch.from_numpy(dataset.map_label(read_label(label_path)).astype(np.uint8))        # (H, W)
        return image.to(device), label.to(device)

    with ThreadPoolExecutor(threads) as pool:                       # PIL decodes without the GIL
        pairs = list(pool.map(one, dataset.samples))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def nearest_index(n_in: int, n_out: int) -> list[int]:
    """Source index of each of ``n_out`` output pixels when PIL resizes ``n_in`` pixels with NEAREST:
    int(a·(i + ½)), a = n_in / n_out, summed step by step in double precision as Pillow's affine
    scaling does (``ImagingScaleAffine``), so that ties fall the same way."""
    a, acc, out = n_in / n_out, n_in / n_out * 0.5, []
    for _ in range(n_out):
        out.append(min(int(acc), n_in - 1))
        acc += a
    return out


def augment(image: torch.Tensor, label: torch.Tensor, size, corner, flip: bool, crop: int | None):
    """One sample's geometry (:meth:`RandomScaleCropFlip.draw`) applied on its device.

    ``image`` uint8 (3, H, W), ``label`` uint8 (H, W) -> uint8 (3, h, w), uint8 (h, w).
    """
    if size:
        x = F.interpolate(image[None].float(), size, mode="bilinear", align_corners=False, antialias=True)
        image = x[0].round().clamp(0, 255).to(torch.uint8)                                   # (3, H', W')
        rows, cols = (torch.tensor(nearest_index(n, m), device=label.device) for n, m in zip(label.shape, size))
        label = label[rows][:, cols]                                                         # (H', W')
    if corner:
        H, W = label.shape
        ph, pw = max(crop - H, 0), max(crop - W, 0)
        if ph or pw:
            padded = torch.tensor(PAD_RGB, dtype=torch.uint8, device=image.device)[:, None, None].repeat(
                1, H + ph, W + pw)                                                           # (3, H + ph, W + pw)
            padded[:, :H, :W] = image
            image = padded
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)
        y, x0 = corner
        image, label = image[:, y:y + crop, x0:x0 + crop], label[y:y + crop, x0:x0 + crop]
    if flip:
        image, label = image.flip(-1), label.flip(-1)
    return image, label


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, H, W), (x/255 − mean) / std, in the order of the CPU path."""
    mean = torch.as_tensor(IMAGENET_MEAN, device=images.device)[:, None, None]
    std = torch.as_tensor(IMAGENET_STD, device=images.device)[:, None, None]
    return (images.float() / 255.0 - mean) / std


class DeviceBatches:
    """Training batches built on ``device`` from the decoded split: iterate for (images, labels).

    ``plan`` is :func:`pipeline.train.batch_plan`'s list of batches of (index, sample seed);
    ``transform`` a :class:`RandomScaleCropFlip`. Yields float32 (B, 3, h, w) normalised images
    and int64 (B, h, w) labels. ``load_seconds`` is the time the decoding took.
    """

    def __init__(self, dataset, transform, plan, device):
        t0 = time.perf_counter()
        self.images, self.labels = load_split(dataset, device)
        self.load_seconds = time.perf_counter() - t0
        self.transform, self.plan, self.device = transform, plan, torch.device(device)

    def __len__(self) -> int:
        return len(self.plan)

    def batch(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for index, seed in items:
            image, label = self.images[index], self.labels[index]
            draws = self.transform.draw(*label.shape, np.random.default_rng(seed))
            image, label = augment(image, label, *draws, self.transform.crop_size)
            images.append(image)
            labels.append(label)
        x = normalize_batch(torch.stack(images))                     # (B, 3, h, w)
        y = torch.stack(labels).long()                               # (B, h, w)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)                      # data time is measured per batch
        return x, y

    def __iter__(self):
        for items in self.plan:
            yield self.batch(items)
