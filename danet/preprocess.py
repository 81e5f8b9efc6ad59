"""The one normalisation of an image for the network, shared by prediction (``danet.prediction``)
and the training data (``pipeline.datasets``): RGB in [0, 1], minus the ImageNet mean, over the
ImageNet std, as torchvision's ImageNet models and the authors' code expect.

mmsegmentation writes the same map on 0–255 (mean 123.675, 116.28, 103.53; std 58.395, 57.12,
57.375): 255 · 0.485 = 123.675, and so on.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN64 = np.array([0.485, 0.456, 0.406])   # exact to float64; the float32 copies round these
IMAGENET_STD64 = np.array([0.229, 0.224, 0.225])
IMAGENET_MEAN = IMAGENET_MEAN64.astype(np.float32)
IMAGENET_STD = IMAGENET_STD64.astype(np.float32)


def normalize(image: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) tensor of ``dtype``, (x/255 − ImageNet mean) / ImageNet std,
    computed in that dtype's precision."""
    dt = np.float64 if dtype == torch.float64 else np.float32
    x = (np.asarray(image, dt) / dt(255) - IMAGENET_MEAN64.astype(dt)) / IMAGENET_STD64.astype(dt)  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None]).to(dtype)        # (1, 3, H, W)
