"""Auxiliary FCN head on layer3 (the authors' ``FCNHead``; mmsegmentation's ``auxiliary_head``).

Training recipes of dilated segmentation nets add a second, shallow classifier on the layer3 map
(stride 8, 1024 channels for ResNet-50/101) whose loss (weight 0.4 in mmsegmentation's DANet
configs) helps the backbone train; at inference it is not used. The authors' code has it as
``auxlayer = FCNHead(1024, nclass)`` in its FCN/PSP/EncNet models (``encoding/models/sseg/fcn.py``),
their DANet does not build it; mmsegmentation's DANet checkpoints carry it as ``auxiliary_head``.

Layout, with the authors' attribute names (``conv5`` indices 0, 1, 4 hold the parameters):

    conv5 = [3×3 conv C→C/4 (no bias), BN, ReLU, Dropout2d(0.1), 1×1 conv C/4→K (bias)]
"""

from __future__ import annotations

import torch
from torch import nn


class FCNHead(nn.Module):
    """3×3 conv-BN-ReLU to ``in_channels // 4`` channels, dropout, 1×1 classifier: (B, C, H, W) → (B, K, H, W)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        inter = in_channels // 4
        self.conv5 = nn.Sequential(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter),
                                   nn.ReLU(), nn.Dropout2d(0.1, False), nn.Conv2d(inter, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(x)                                               # (B, K, H, W)
