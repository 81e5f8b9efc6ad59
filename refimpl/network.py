"""The whole DANet in NumPy: dilated ResNet -> DANet head -> bilinear upsampling (paper Fig. 2).

Mirrors ``danet.DANet`` (the authors' ``encoding/models/sseg/danet.py``) at inference::

    image (B, 3, H0, W0)
      -> pretrained: dilated ResNet (refimpl.backbone)                  A (B, C_in, H, W), H = H0/os
      -> head: conv5a -> PAM -> conv51 -> conv6      pam logits          (B, K, H, W)
               conv5c -> CAM -> conv52 -> conv7      cam logits          (B, K, H, W)
               conv51 out + conv52 out -> conv8      fused logits        (B, K, H, W)
      -> each resized bilinearly to (H0, W0)         (fused, pam, cam)   (B, K, H0, W0)

Weights are one mapping keyed by the ``danet.DANet`` state_dict names (``pretrained.conv1.weight``,
``pretrained.layer1.0.conv1.weight``, ``head.conv5a.0.weight``, ...); the backbone's block type,
depth and widths, the stem and the number of classes K are read from their names and shapes.
Output stride, multi-grid, dilation, the resize convention and the CAM variant are not in the
weights and are arguments, defaulting to the authors' choices.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from refimpl.attention import CAM_VARIANTS
from refimpl.backbone import ARCHS, EXPANSION, STEMS, infer_arch, resnet, resnet_weight_shapes, stage_plan
from refimpl.head import danet_head, head_weight_shapes, sub_weights
from refimpl.layers import interpolate_bilinear
from refimpl.weights import WeightError, check_weights, without_counters


def danet_weight_shapes(num_classes: int, backbone: str = "resnet50", *, stem: str = "plain",
                        stem_width: int | None = None, output_stride: int = 8, reduction: int = 8) -> dict:
    """Shapes of every array of ``danet.DANet(num_classes, backbone, ...).state_dict()``
    (``num_batches_tracked`` counters left out), keyed by its names."""
    if backbone not in ARCHS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(ARCHS)}")
    block, blocks, widths = ARCHS[backbone]
    return _shapes(block, blocks, widths, stem, stem_width, output_stride, num_classes, reduction)


def _shapes(block, blocks, widths, stem, stem_width, output_stride, num_classes, reduction):
    backbone = resnet_weight_shapes(block, blocks, widths, stem, stem_width, output_stride)
    head = head_weight_shapes(widths[3] * EXPANSION[block], num_classes, reduction)
    return {**{f"pretrained.{k}": v for k, v in backbone.items()}, **{f"head.{k}": v for k, v in head.items()}}


def _architecture(weights, backbone, stem, stem_width):
    """(block, blocks, widths, stem, stem_width): the arguments where given, else read from the weights."""
    bb = sub_weights(weights, "pretrained")
    if backbone is None:
        arch = infer_arch(bb, prefix="pretrained.")
        block, blocks, widths = arch["block"], arch["blocks"], arch["widths"]
    elif backbone in ARCHS:
        block, blocks, widths = ARCHS[backbone]
    else:
        raise ValueError(f"danet_forward: unknown backbone {backbone!r}; choose one of {sorted(ARCHS)} or None")
    if stem is None:
        stem = "deep" if "conv1.0.weight" in bb else "plain"
    if stem not in STEMS:
        raise ValueError(f"danet_forward: unknown stem {stem!r}; choose one of {STEMS} or None")
    if stem == "plain" and stem_width is not None:
        raise ValueError(f"danet_forward: stem_width={stem_width} applies to the deep stem only")
    if stem == "deep" and stem_width is None:
        stem_width = np.shape(bb["conv1.0.weight"])[0] if "conv1.0.weight" in bb else widths[0]
    return block, blocks, widths, stem, stem_width


def danet_forward(image, weights: Mapping[str, np.ndarray], *, backbone: str | None = None,
                  output_stride: int = 8, multi_grid=None, stem: str | None = None,
                  stem_width: int | None = None, dilated: bool = True, align_corners: bool = True,
                  cam_variant: str = "official", return_stages: bool = False):
    """DANet forward at inference: image -> (fused, pam, cam) logits at the input size.

    .. math::
        A = \\mathrm{ResNet}(x),\\quad (f, p, c) = \\mathrm{Head}(A),\\quad
        \\text{out} = (M_H\\, f\\, M_W^\\top,\\ M_H\\, p\\, M_W^\\top,\\ M_H\\, c\\, M_W^\\top)

    with M_H, M_W the bilinear resize matrices of :func:`refimpl.layers.bilinear_matrix`.

    Parameters
    ----------
    image : ndarray (B, 3, H0, W0), float32 or float64; the computation runs in its dtype.
    weights : ``danet.DANet(...).state_dict()`` as NumPy arrays (``num_batches_tracked`` may be
        present). Every array is checked by name and shape before use; a missing, extra or
        misshapen one raises :class:`refimpl.WeightError` naming it.
    backbone : ``"tiny" | "resnet18" | "resnet34" | "resnet50" | "resnet101"``, or None to read
        block type, blocks per stage and widths from the weights.
    output_stride : 8 (the paper), 16 or 32.
    multi_grid : layer4's dilations, e.g. (4, 8, 16) (the authors' Cityscapes model); output stride 8.
    stem : ``"plain"`` (7x7) or ``"deep"`` (3x3 w-w-2w), or None to read it from the weights.
    stem_width : w of the deep stem, or None to read it from the weights.
    dilated : False keeps the strides of ``output_stride`` without dilating (short receptive field).
    align_corners : the bilinear convention, True as the authors' code, False as mmsegmentation.
    cam_variant : ``"official"`` or ``"paper"``, see :func:`refimpl.channel_attention`.
    return_stages : also return a dict of named stages in computation order: ``stem``, ``maxpool``,
        ``layer{i}.{j}`` and ``layer{i}``, the head's ``feat1``, ``sa_feat``, ``sa_conv``, ``feat2``,
        ``sc_feat``, ``sc_conv``, ``feat_sum``, the logits before resizing ``fused_lowres``,
        ``pam_lowres``, ``cam_lowres`` and after it ``fused``, ``pam``, ``cam``.

    Returns
    -------
    (fused, pam, cam) : three ndarrays (B, K, H0, W0) of the image's dtype; then the stages dict.
    """
    where = "danet_forward"
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.floating) or image.ndim != 4 \
            or image.shape[1] != 3:
        raise ValueError(f"{where}: image must be a floating-point numpy array of shape (B, 3, H0, W0), got "
                         f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}")
    if cam_variant not in CAM_VARIANTS:
        raise ValueError(f"{where}: cam_variant must be one of {CAM_VARIANTS}, got {cam_variant!r}")
    weights = without_counters(weights)
    block, blocks, widths, stem, stem_width = _architecture(weights, backbone, stem, stem_width)
    stage_plan(blocks, output_stride, multi_grid, dilated)          # refuses a bad output_stride / multi_grid
    if "head.conv6.1.weight" not in weights:                        # it fixes the number of classes K
        raise WeightError(f"{where} weights: missing array 'head.conv6.1.weight'")
    num_classes = np.shape(weights["head.conv6.1.weight"])[0]
    Ci = widths[3] * EXPANSION[block] // 4                          # the head's inner width
    Cr = np.shape(weights["head.sa.query_conv.weight"])[0] if "head.sa.query_conv.weight" in weights else Ci // 8
    reduction = Ci // max(Cr, 1)                                    # the PAM's C / C' (8 in DANet)
    check_weights(weights, _shapes(block, blocks, widths, stem, stem_width, output_stride, num_classes,
                                   reduction), where=f"{where} weights")

    size = image.shape[2:]
    out = resnet(image, sub_weights(weights, "pretrained"), output_stride=output_stride,
                 multi_grid=multi_grid, dilated=dilated, return_stages=return_stages)
    A, stages = out if return_stages else (out, {})                                # A (B, C_in, H, W)
    *lowres, head_mids = danet_head(A, sub_weights(weights, "head"), cam_variant=cam_variant,
                                    return_intermediates=True)                      # each (B, K, H, W)
    outputs = tuple(interpolate_bilinear(o, size, align_corners=align_corners) for o in lowres)  # (B, K, H0, W0)
    if not return_stages:
        return outputs
    stages.update(head_mids)
    stages.update(zip(("fused_lowres", "pam_lowres", "cam_lowres"), lowres))
    stages.update(zip(("fused", "pam", "cam"), outputs))
    return (*outputs, stages)
