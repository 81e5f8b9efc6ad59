"""The DANet head (paper Sec. 3.4; official ``DANetHead``) and the paper's ablation heads.

``attention`` picks the ablation of the paper's Table 1:

=========  ==========================================================  ========================
value      branches built                                              forward returns
=========  ==========================================================  ========================
"both"     conv5a→sa→conv51→conv6, conv5c→sc→conv52→conv7, conv8(sum)  (fused, pam, cam)
"pam"      conv5a→sa→conv51→conv6                                      (pam,)
"cam"      conv5c→sc→conv52→conv7                                      (cam,)
"none"     conv5a→conv51→conv6 (the dilated-FCN baseline)              (fcn,)
=========  ==========================================================  ========================

The first output is always the one evaluated; training sums the cross-entropy of all of them
(1:1:1 for "both", as the official code). "none" is exactly "pam" without the attention module, so
the ablation changes one thing at a time.
"""

from __future__ import annotations

import torch
from torch import nn

from danet.attention import DEFAULT_CHUNK_SIZE, ChannelAttention, PositionAttention

ATTENTIONS = ("both", "pam", "cam", "none")


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def _classifier(c_in: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(0.1, False), nn.Conv2d(c_in, num_classes, 1))


class DANetHead(nn.Module):
    """DANet head: ``DANetHead(2048, 19)`` has 23,954,619 trainable parameters, as the official one.

    Parameters
    ----------
    in_channels : channels of the backbone output (2048 for ResNet-50/101).
    num_classes : K, the number of classes.
    reduction : query/key reduction of the PAM (8).
    cam_variant : ``"official"`` or ``"paper"``, see :class:`ChannelAttention`.
    attention : ``"both" | "pam" | "cam" | "none"`` (module docstring).
    pam_impl : ``"explicit"`` (default, the official N×N computation), ``"chunked"`` or ``"sdpa"``,
        see :class:`PositionAttention`. All compute out = γ·D·softmax(BᵀC)ᵀ + A; only peak memory
        and speed differ.
    pam_chunk_size : query-block size of ``pam_impl="chunked"`` (default 1024); ignored otherwise.

    The ``pam_*`` arguments go to :class:`PositionAttention`, which checks them; with no PAM built
    (``attention`` "cam" or "none") they are unused.
    """

    def __init__(self, in_channels: int, num_classes: int, reduction: int = 8,
                 cam_variant: str = "official", attention: str = "both",
                 pam_chunk_size: int = DEFAULT_CHUNK_SIZE, pam_impl: str = "explicit"):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"DANetHead: attention must be one of {ATTENTIONS}, got {attention!r}")
        if in_channels < 4 or num_classes < 1:
            raise ValueError(f"DANetHead: need in_channels >= 4 and num_classes >= 1, got {in_channels}, {num_classes}")
        self.attention = attention
        inter = in_channels // 4
        if attention in ("both", "pam", "none"):
            self.conv5a = _conv_bn_relu(in_channels, inter)
            if attention != "none":
                self.sa = PositionAttention(inter, reduction, impl=pam_impl, chunk_size=pam_chunk_size)
            self.conv51 = _conv_bn_relu(inter, inter)
            self.conv6 = _classifier(inter, num_classes)
        if attention in ("both", "cam"):
            self.conv5c = _conv_bn_relu(in_channels, inter)
            self.sc = ChannelAttention(cam_variant)
            self.conv52 = _conv_bn_relu(inter, inter)
            self.conv7 = _classifier(inter, num_classes)
        if attention == "both":
            self.conv8 = _classifier(inter, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.attention in ("both", "pam", "none"):
            feat1 = self.conv5a(x)                                        # (B, C_i, H, W)
            sa_feat = self.sa(feat1) if self.attention != "none" else feat1
            sa_conv = self.conv51(sa_feat)                                # (B, C_i, H, W)
            sa_output = self.conv6(sa_conv)                               # (B, K, H, W)
            if self.attention != "both":
                return (sa_output,)
        feat2 = self.conv5c(x)                                            # (B, C_i, H, W)
        sc_feat = self.sc(feat2)                                          # (B, C_i, H, W)
        sc_conv = self.conv52(sc_feat)                                    # (B, C_i, H, W)
        sc_output = self.conv7(sc_conv)                                   # (B, K, H, W)
        if self.attention == "cam":
            return (sc_output,)
        sasc_output = self.conv8(sa_conv + sc_conv)                       # (B, K, H, W)
        return (sasc_output, sa_output, sc_output)
