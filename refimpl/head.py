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

from refimpl.attention import CAM_VARIANTS, _check_features, channel_attention, pam_weight_shapes, position_attention
from refimpl.weights import WeightError, check_weights

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
_GEMM_DEPTH = 1024  # conv2d stacks kernel taps until a matrix product is this deep (C_in x taps)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
           stride: int = 1, padding: int | None = None, dilation: int = 1) -> np.ndarray:
    """2-D convolution (cross-correlation) with zero padding, as ``nn.Conv2d(k, stride, padding, dilation)``.

    .. math:: y_o(p) = b_o + \\sum_{dy,dx} W_{o,:,dy,dx} \\cdot x_{:}(s\\,p + d\\,(dy, dx) - \\text{pad})

    A k x k convolution is a sum of k*k 1x1 convolutions (matrix products over channels), one per
    kernel tap (dy, dx), each applied to the padded input shifted by d*(dy, dx) and subsampled by
    the stride s: "im2col by shifts". Taps are stacked along the channel axis in groups of about
    ``_GEMM_DEPTH`` rows (all 49 taps of the 3-channel stem in one product; one tap at a time for
    wide layers), so each matrix product is deep enough to run at GEMM speed and the stacked
    columns never exceed ~max(C_in, _GEMM_DEPTH) x N.

    Parameters
    ----------
    x : ndarray (B, C_in, H, W).
    weight : ndarray (C_out, C_in, kh, kw).
    bias : ndarray (C_out,) or None.
    stride, dilation : ints, as in ``nn.Conv2d``.
    padding : int, or None for 'same' padding ``dilation * (k // 2)`` (odd kernels only).

    Returns
    -------
    ndarray (B, C_out, H_out, W_out), x's dtype, with H_out = (H + 2 pad - d (kh - 1) - 1) // s + 1.
    """
    nb, C_in, H, W = _check_features(x, "conv2d", finite=False)
    if not isinstance(weight, np.ndarray) or weight.ndim != 4:
        raise ValueError(f"conv2d: weight must have shape (C_out, C_in, kh, kw), got {np.shape(weight)}")
    C_out, C_w, kh, kw = weight.shape
    if bias is not None and np.shape(bias) != (C_out,):
        raise ValueError(f"conv2d: bias must have shape ({C_out},), got {np.shape(bias)}")
    if C_w != C_in:
        raise ValueError(f"conv2d: weight {weight.shape} does not fit input {x.shape} "
                         f"({C_w} input channels, expected {C_in})")
    if padding is None:
        if kh % 2 != 1 or kw % 2 != 1:
            raise ValueError(f"conv2d: padding=None ('same') needs an odd kernel, got weight {weight.shape}")
        ph, pw = dilation * (kh // 2), dilation * (kw // 2)
    else:
        ph = pw = padding
    s, d = stride, dilation
    Ho = (H + 2 * ph - d * (kh - 1) - 1) // s + 1
    Wo = (W + 2 * pw - d * (kw - 1) - 1) // s + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"conv2d: input {x.shape} is too small for weight {weight.shape} with "
                         f"stride {s}, padding {padding}, dilation {d}")
    N = Ho * Wo
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x  # (B, C_in, H+2ph, W+2pw)
    # column block t of W2 is the 1x1 weight of tap t = (dy, dx), row-major over the kernel
    W2 = weight.astype(x.dtype, copy=False).transpose(0, 2, 3, 1).reshape(C_out, kh * kw * C_in)  # (C_out, k*k*C_in)

    def shifted(dy, dx):  # what tap (dy, dx) sees at every output pixel
        r, c = dy * d, dx * d
        return x_pad[:, :, r:r + s * (Ho - 1) + 1:s, c:c + s * (Wo - 1) + 1:s].reshape(nb, C_in, N)  # (B, C_in, N)

    taps = [(dy, dx) for dy in range(kh) for dx in range(kw)]
    per = max(1, _GEMM_DEPTH // C_in)                                     # taps per matrix product
    y = None
    for t0 in range(0, len(taps), per):
        group = taps[t0:t0 + per]
        cols = np.concatenate([shifted(dy, dx) for dy, dx in group], axis=1) if len(group) > 1 \
            else shifted(*group[0])                                       # (B, g*C_in, N)
        part = W2[:, t0 * C_in:(t0 + len(group)) * C_in] @ cols           # (B, C_out, N)
        y = part if y is None else np.add(y, part, out=y)
    if bias is not None:
        y += bias.astype(x.dtype, copy=False)[:, None]
    return y.reshape(nb, C_out, Ho, Wo)                                   # (B, C_out, H_out, W_out)


def batch_norm(x, weight, bias, running_mean, running_var, eps: float = BN_EPS) -> np.ndarray:
    """BatchNorm at inference: :math:`y = (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} \\cdot w + b`, per channel."""
    C = _check_features(x, "batch_norm", finite=False)[1]
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if np.shape(v) != (C,):
            raise ValueError(f"batch_norm: {name} must have shape ({C},), got {np.shape(v)}")
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
    _check_features(x, where)
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
