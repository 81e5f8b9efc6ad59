"""The DANet head in NumPy (paper Sec. 3.4, Fig. 2; official ``DANetHead``), inference semantics.

Data path, with the official attribute names (the keys of the weight mapping)::

    A (B, C_in, H, W)
      -> conv5a (3x3, C_in -> C_i, BN, ReLU) -> sa (PAM) -> conv51 (3x3, BN, ReLU) -> conv6 (1x1) -> pam logits
      -> conv5c (3x3, C_in -> C_i, BN, ReLU) -> sc (CAM) -> conv52 (3x3, BN, ReLU) -> conv7 (1x1) -> cam logits
      conv51 output + conv52 output                                      -> conv8 (1x1) -> fused logits

with C_i = C_in // 4. Dropout2d(0.1) precedes each 1x1 classifier in training; at inference it is
the identity, and BatchNorm uses its running statistics.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from refimpl.attention import CAM_VARIANTS, channel_attention, pam_weight_shapes, position_attention
from refimpl.weights import WeightError, check_weights

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Stride-1 convolution with 'same' zero padding, as ``nn.Conv2d(k, padding=k // 2)``.

    .. math:: y_{o}(p) = b_o + \\sum_{dy,dx} W_{o,:,dy,dx} \\cdot x_{:}(p + (dy, dx) - k//2)

    A k x k convolution is a sum of k*k 1x1 convolutions (matrix products over channels), each
    applied to a shifted copy of the padded input.

    Parameters
    ----------
    x : ndarray (B, C_in, H, W).
    weight : ndarray (C_out, C_in, k, k), k odd.
    bias : ndarray (C_out,) or None.
    """
    nb, C_in, H, W = x.shape
    C_out, C_w, kh, kw = weight.shape
    if C_w != C_in or kh != kw or kh % 2 != 1:
        raise ValueError(f"conv2d: weight {weight.shape} does not fit input {x.shape} (odd square kernel)")
    p = kh // 2
    weight = weight.astype(x.dtype, copy=False)
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))                  # (B, C_in, H+2p, W+2p)
    y = np.zeros((nb, C_out, H * W), dtype=x.dtype)                       # (B, C_out, N)
    for dy in range(kh):
        for dx in range(kw):
            shifted = x_pad[:, :, dy:dy + H, dx:dx + W].reshape(nb, C_in, H * W)  # (B, C_in, N)
            y += weight[:, :, dy, dx] @ shifted                                   # (B, C_out, N)
    if bias is not None:
        y += bias.astype(x.dtype, copy=False)[:, None]
    return y.reshape(nb, C_out, H, W)                                     # (B, C_out, H, W)


def batch_norm(x, weight, bias, running_mean, running_var, eps: float = BN_EPS) -> np.ndarray:
    """BatchNorm at inference: :math:`y = (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} \\cdot w + b`, per channel."""
    dt = x.dtype
    scale = weight.astype(dt) / np.sqrt(running_var.astype(dt) + dt.type(eps))  # (C,)
    shift = bias.astype(dt) - running_mean.astype(dt) * scale                   # (C,)
    return x * scale[:, None, None] + shift[:, None, None]


def _conv_bn_relu(x, weights, prefix):
    """``nn.Sequential(Conv2d(3x3, bias=False), BatchNorm2d, ReLU)`` at keys ``prefix.0`` / ``prefix.1``."""
    y = conv2d(x, weights[f"{prefix}.0.weight"])
    y = batch_norm(y, weights[f"{prefix}.1.weight"], weights[f"{prefix}.1.bias"],
                   weights[f"{prefix}.1.running_mean"], weights[f"{prefix}.1.running_var"])
    return np.maximum(y, 0)


def _classifier(x, weights, prefix):
    """``nn.Sequential(Dropout2d(0.1), Conv2d(1x1))``: dropout is the identity at inference."""
    return conv2d(x, weights[f"{prefix}.1.weight"], weights[f"{prefix}.1.bias"])


def sub_weights(weights, prefix):
    """The entries under ``prefix.`` with the prefix removed (a submodule's state_dict)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in weights.items() if k.startswith(prefix + ".")}


def head_weight_shapes(in_channels: int, num_classes: int, reduction: int = 8) -> dict:
    """Shapes of every array in the ``DANetHead`` state_dict (``num_batches_tracked`` left out)."""
    Ci = in_channels // 4
    shapes = {}
    for name, c_in in (("conv5a", in_channels), ("conv5c", in_channels), ("conv51", Ci), ("conv52", Ci)):
        shapes[f"{name}.0.weight"] = (Ci, c_in, 3, 3)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.1.{stat}"] = (Ci,)
    shapes.update({f"sa.{k}": v for k, v in pam_weight_shapes(Ci, Ci // reduction).items()})
    shapes["sc.gamma"] = (1,)
    for name in ("conv6", "conv7", "conv8"):
        shapes[f"{name}.1.weight"] = (num_classes, Ci, 1, 1)
        shapes[f"{name}.1.bias"] = (num_classes,)
    return shapes


def danet_head(x, weights: Mapping[str, np.ndarray], *, cam_variant: str = "official",
               return_intermediates: bool = False):
    """DANet head forward at inference: (fused, pam, cam) logits at feature resolution.

    .. math::
        F_p = \\mathrm{conv51}(\\mathrm{PAM}(\\mathrm{conv5a}(A))),\\quad
        F_c = \\mathrm{conv52}(\\mathrm{CAM}(\\mathrm{conv5c}(A))) \\\\
        \\text{pam} = \\mathrm{conv6}(F_p),\\quad \\text{cam} = \\mathrm{conv7}(F_c),\\quad
        \\text{fused} = \\mathrm{conv8}(F_p + F_c)

    Parameters
    ----------
    x : ndarray (B, C_in, H, W) -- backbone features.
    weights : the ``DANetHead`` state_dict as NumPy arrays (``conv5a.0.weight``,
        ``sa.query_conv.weight``, ``conv6.1.bias``, ...). ``num_batches_tracked`` may be present.
    cam_variant : ``"official"`` or ``"paper"``, see :func:`refimpl.channel_attention`.
    return_intermediates : also return a dict of named intermediate feature maps.

    Returns
    -------
    (fused, pam, cam) : three ndarrays (B, num_classes, H, W) of x's dtype; then the dict if asked.
    """
    where = "danet_head"
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"{where}: x must be a numpy array of shape (B, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if cam_variant not in CAM_VARIANTS:
        raise ValueError(f"{where}: cam_variant must be one of {CAM_VARIANTS}, got {cam_variant!r}")
    for key in ("conv6.1.weight", "sa.query_conv.weight"):  # they fix num_classes and C'
        if key not in weights:
            raise WeightError(f"{where} weights: missing array '{key}'")
    num_classes = np.shape(weights["conv6.1.weight"])[0]
    Ci = x.shape[1] // 4
    reduction = Ci // max(np.shape(weights["sa.query_conv.weight"])[0], 1)
    counters = {k for k in weights if k.endswith("num_batches_tracked")}
    check_weights({k: v for k, v in weights.items() if k not in counters},
                  head_weight_shapes(x.shape[1], num_classes, reduction), where=f"{where} weights")

    feat1 = _conv_bn_relu(x, weights, "conv5a")                       # (B, C_i, H, W)
    sa_feat = position_attention(feat1, sub_weights(weights, "sa"))          # (B, C_i, H, W)
    sa_conv = _conv_bn_relu(sa_feat, weights, "conv51")               # (B, C_i, H, W)
    sa_output = _classifier(sa_conv, weights, "conv6")                # (B, K, H, W)

    feat2 = _conv_bn_relu(x, weights, "conv5c")                       # (B, C_i, H, W)
    sc_feat = channel_attention(feat2, sub_weights(weights, "sc"), variant=cam_variant)  # (B, C_i, H, W)
    sc_conv = _conv_bn_relu(sc_feat, weights, "conv52")               # (B, C_i, H, W)
    sc_output = _classifier(sc_conv, weights, "conv7")                # (B, K, H, W)

    feat_sum = sa_conv + sc_conv                                      # (B, C_i, H, W)
    sasc_output = _classifier(feat_sum, weights, "conv8")             # (B, K, H, W)

    outputs = (sasc_output, sa_output, sc_output)
    if return_intermediates:
        named = {"feat1": feat1, "sa_feat": sa_feat, "sa_conv": sa_conv, "feat2": feat2,
                 "sc_feat": sc_feat, "sc_conv": sc_conv, "feat_sum": feat_sum}
        return (*outputs, named)
    return outputs
