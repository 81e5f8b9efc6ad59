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
from refimpl.layers import batch_norm, check_features, conv2d
from refimpl.weights import WeightError, check_weights, without_counters

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
    check_features(x, where)
    if cam_variant not in CAM_VARIANTS:
        raise ValueError(f"{where}: cam_variant must be one of {CAM_VARIANTS}, got {cam_variant!r}")
    for key in ("conv6.1.weight", "sa.query_conv.weight"):  # they fix num_classes and C'
        if key not in weights:
            raise WeightError(f"{where} weights: missing array '{key}'")
    num_classes = np.shape(weights["conv6.1.weight"])[0]
    Ci = x.shape[1] // 4
    reduction = Ci // max(np.shape(weights["sa.query_conv.weight"])[0], 1)
    check_weights(without_counters(weights),
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
