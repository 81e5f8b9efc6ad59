"""The dilated ResNet backbone in NumPy, inference semantics (BatchNorm with running statistics).

Mirrors ``danet.ResNet``, which follows torchvision's ``resnet.py`` (He et al., CVPR 2016; the
v1.5 bottleneck with its stride on the 3x3 convolution) and the authors' dilated variant
(``encoding/models/backbone/resnet.py`` in github.com/junfu1115/DANet; Yu & Koltun 2016, DeepLab).
Weights are keyed by torchvision's names, without the ``pretrained.`` prefix DANet adds::

    image (B, 3, H0, W0)
      -> stem: conv1 (7x7 s2) or conv1.0/.1/.3/.4/.6 (3x3 s2, 3x3, 3x3), bn1, ReLU  (B, w0 or 2w, H0/2, W0/2)
      -> maxpool 3x3 s2                                                        (B, ., H0/4, W0/4)
      -> layer1 (stride 1) -> layer2 (stride 2) -> layer3 -> layer4            (B, w3 e, H0/os, W0/os)

with w0 ... w3 the stage widths (64 ... 512 for the ImageNet ResNets), e the block's expansion
(1 basic, 4 bottleneck) and w the deep stem's width.

A *dilated* ResNet keeps layer3 and layer4 at stride 1 past the output stride ``os`` and dilates
their 3x3 convolutions instead (output stride 8: dilations 2 and 4), so the receptive field keeps
growing while the feature map stays dense. The first block of a dilated stage keeps the previous
stage's dilation (torchvision's convention); ``multi_grid`` sets layer4's dilations block by block.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from refimpl.layers import batch_norm, conv2d, max_pool2d
from refimpl.weights import WeightError, check_weights, without_counters

EXPANSION = {"basic": 1, "bottleneck": 4}   # output channels of a block = width x expansion
STEMS = ("plain", "deep")
# name -> (block, blocks per stage, stage widths): the one table; danet.backbone.ARCHS adds its torch blocks
ARCHS = {
    "tiny": ("basic", (2, 2, 2, 2), (16, 32, 64, 128)),
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet101": ("bottleneck", (3, 4, 23, 3), (64, 128, 256, 512)),
}
BN_STATS = ("weight", "bias", "running_mean", "running_var")


def stage_plan(blocks: tuple, output_stride: int = 8, multi_grid=None, dilated: bool = True) -> list:
    """(stride, [dilation of each block]) of layer1 ... layer4.

    The stem and layer2 bring the stride to 8; layer3 and layer4 halve it further only as far as
    ``output_stride`` allows, and dilate instead: os 8 -> dilations (2, 4), os 16 -> (1, 2),
    os 32 -> (1, 1). ``dilated=False`` keeps the strides but drops the dilations (so it refuses a
    ``multi_grid``, which would dilate layer4 again).
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if multi_grid is not None and (output_stride != 8 or len(multi_grid) != blocks[3]):
        raise ValueError(f"multi_grid {tuple(multi_grid)} needs output_stride 8 and {blocks[3]} entries "
                         "(one per layer4 block)")
    if multi_grid is not None and not dilated:
        raise ValueError(f"multi_grid {tuple(multi_grid)} dilates layer4, dilated=False asks for no dilation: "
                         "pass multi_grid=None with dilated=False")
    s3, s4 = {8: (1, 1), 16: (2, 1), 32: (2, 2)}[output_stride]
    d3 = 2 if s3 == 1 else 1
    d4 = 2 * d3 if s4 == 1 else d3
    if not dilated:
        d3 = d4 = 1
    grid4 = list(multi_grid) if multi_grid is not None else [d3] + [d4] * (blocks[3] - 1)
    return [(1, [1] * blocks[0]), (2, [1] * blocks[1]),
            (s3, [1] + [d3] * (blocks[2] - 1)), (s4, grid4)]


def infer_arch(weights: Mapping[str, np.ndarray], prefix: str = "") -> dict:
    """Read block type, blocks per stage, stage widths and stem from a backbone state_dict's names and shapes.

    Returns ``{"block", "blocks", "widths", "stem", "stem_width"}``; raises :class:`WeightError`
    naming the array it needed and did not find (``prefix`` is put before the name in the message).
    """
    def need(key):
        if key not in weights:
            raise WeightError(f"cannot tell the backbone's architecture: missing array '{prefix}{key}'")
        return np.shape(weights[key])

    deep = "conv1.0.weight" in weights
    block = "bottleneck" if "layer1.0.conv3.weight" in weights else "basic"
    blocks, widths = [], []
    for i in range(1, 5):
        widths.append(need(f"layer{i}.0.conv1.weight")[0])   # the block's width w (planes)
        n = 0
        while f"layer{i}.{n}.conv1.weight" in weights:
            n += 1
        blocks.append(n)
    return {"block": block, "blocks": tuple(blocks), "widths": tuple(widths),
            "stem": "deep" if deep else "plain", "stem_width": need("conv1.0.weight")[0] if deep else None}


def resnet_weight_shapes(block: str, blocks: tuple, widths: tuple, stem: str = "plain",
                         stem_width: int | None = None, output_stride: int = 8) -> dict:
    """Shapes of every array of the backbone's state_dict (``num_batches_tracked`` left out).

    A stage's first block has a ``downsample`` shortcut where its stride or its width changes
    (so ``output_stride`` matters only for a stage as wide as the one before it).
    """
    shapes = {}
    strides = [stride for stride, _ in stage_plan(blocks, output_stride)]

    def conv_bn(conv, bn, c_out, c_in, k):
        shapes[f"{conv}.weight"] = (c_out, c_in, k, k)
        shapes.update({f"{bn}.{stat}": (c_out,) for stat in BN_STATS})

    if stem == "plain":
        inplanes = widths[0]
        conv_bn("conv1", "bn1", inplanes, 3, 7)
    elif stem == "deep":
        w = stem_width or widths[0]
        inplanes = 2 * w
        conv_bn("conv1.0", "conv1.1", w, 3, 3)
        conv_bn("conv1.3", "conv1.4", w, w, 3)
        conv_bn("conv1.6", "bn1", 2 * w, w, 3)
    else:
        raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
    e = EXPANSION[block]
    for i, (n, planes, stride) in enumerate(zip(blocks, widths, strides), start=1):
        for j in range(n):
            p = f"layer{i}.{j}"
            if block == "basic":
                conv_bn(f"{p}.conv1", f"{p}.bn1", planes, inplanes, 3)
                conv_bn(f"{p}.conv2", f"{p}.bn2", planes, planes, 3)
            else:
                conv_bn(f"{p}.conv1", f"{p}.bn1", planes, inplanes, 1)
                conv_bn(f"{p}.conv2", f"{p}.bn2", planes, planes, 3)
                conv_bn(f"{p}.conv3", f"{p}.bn3", planes * e, planes, 1)
            if j == 0 and (stride != 1 or inplanes != planes * e):
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", planes * e, inplanes, 1)
            inplanes = planes * e
    return shapes


def _bn(x, weights, prefix):
    """``nn.BatchNorm2d`` at inference with the arrays under ``prefix``."""
    return batch_norm(x, *(weights[f"{prefix}.{stat}"] for stat in BN_STATS))


def _relu(x):
    return np.maximum(x, 0, out=x)   # in place: x is always a fresh array here


def basic_block(x, weights, prefix, stride=1, dilation=1):
    """ResNet basic block: two 3x3 convolutions and the identity (or a strided 1x1) shortcut.

    .. math:: y = \\mathrm{ReLU}(\\mathrm{BN_2}(\\mathrm{conv_2}(\\mathrm{ReLU}(\\mathrm{BN_1}(\\mathrm{conv_1}\\,x))))
              + \\mathrm{shortcut}(x))
    """
    out = _relu(_bn(conv2d(x, weights[f"{prefix}.conv1.weight"], stride=stride, dilation=dilation),
                    weights, f"{prefix}.bn1"))                                    # (B, w, H/s, W/s)
    out = _bn(conv2d(out, weights[f"{prefix}.conv2.weight"], dilation=dilation), weights, f"{prefix}.bn2")
    return _relu(out + _shortcut(x, weights, prefix, stride))                     # (B, w, H/s, W/s)


def bottleneck(x, weights, prefix, stride=1, dilation=1):
    """ResNet v1.5 bottleneck: 1x1 reduce, 3x3 (strided, dilated), 1x1 expand x4, plus the shortcut.

    .. math:: y = \\mathrm{ReLU}(\\mathrm{BN_3}(\\mathrm{conv_3}(\\mathrm{ReLU}(\\mathrm{BN_2}(\\mathrm{conv_2}
              (\\mathrm{ReLU}(\\mathrm{BN_1}(\\mathrm{conv_1}\\,x))))))) + \\mathrm{shortcut}(x))
    """
    out = _relu(_bn(conv2d(x, weights[f"{prefix}.conv1.weight"]), weights, f"{prefix}.bn1"))  # (B, w, H, W)
    out = _relu(_bn(conv2d(out, weights[f"{prefix}.conv2.weight"], stride=stride, dilation=dilation),
                    weights, f"{prefix}.bn2"))                                               # (B, w, H/s, W/s)
    out = _bn(conv2d(out, weights[f"{prefix}.conv3.weight"]), weights, f"{prefix}.bn3")     # (B, 4w, H/s, W/s)
    return _relu(out + _shortcut(x, weights, prefix, stride))                                # (B, 4w, H/s, W/s)


def _shortcut(x, weights, prefix, stride):
    """Identity, or ``downsample`` = strided 1x1 convolution + BN where the shape changes."""
    if f"{prefix}.downsample.0.weight" not in weights:
        return x
    return _bn(conv2d(x, weights[f"{prefix}.downsample.0.weight"], stride=stride), weights,
               f"{prefix}.downsample.1")                                                 # (B, C_out, H/s, W/s)


def stem(x, weights):
    """The stem up to and including its ReLU: (B, 3, H0, W0) -> (B, C, H0/2, W0/2), without the max pool.

    ``"plain"`` (key ``conv1.weight``): one 7x7 stride-2 convolution. ``"deep"`` (keys
    ``conv1.0/.3/.6``, BNs ``conv1.1/.4``): 3x3 stride 2, then two 3x3, the last to 2w channels.
    Both end in ``bn1`` and ReLU.
    """
    if "conv1.weight" in weights:
        y = conv2d(x, weights["conv1.weight"], stride=2, padding=3)                # (B, w0, H0/2, W0/2)
    else:
        y = _relu(_bn(conv2d(x, weights["conv1.0.weight"], stride=2), weights, "conv1.1"))  # (B, w, H0/2, W0/2)
        y = _relu(_bn(conv2d(y, weights["conv1.3.weight"]), weights, "conv1.4"))           # (B, w, H0/2, W0/2)
        y = conv2d(y, weights["conv1.6.weight"])                                           # (B, 2w, H0/2, W0/2)
    return _relu(_bn(y, weights, "bn1"))


def resnet(x, weights: Mapping[str, np.ndarray], *, output_stride: int = 8, multi_grid=None,
           dilated: bool = True, return_stages: bool = False):
    """Dilated ResNet forward: image (B, 3, H0, W0) -> features A (B, C_out, H0/os, W0/os).

    .. math:: A = \\mathrm{layer_4}(\\mathrm{layer_3}(\\mathrm{layer_2}(\\mathrm{layer_1}(
              \\mathrm{maxpool}(\\mathrm{stem}(x))))))

    Parameters
    ----------
    x : ndarray (B, 3, H0, W0), float32 or float64.
    weights : the backbone's state_dict without prefix (``conv1.weight``, ``layer1.0.conv1.weight``,
        ...); block type, depth and widths are read from it (:func:`infer_arch`), then every
        array is checked by name and shape (``num_batches_tracked`` counters may be present).
    output_stride, multi_grid, dilated : see :func:`stage_plan`.
    return_stages : also return a dict of named stage outputs: ``stem`` (after bn1 and ReLU),
        ``maxpool``, each block ``layer{i}.{j}`` and each stage ``layer{i}`` (its last block).

    Returns
    -------
    A : ndarray (B, C_out, H, W), x's dtype; then the stages dict if asked for.
    """
    arch = infer_arch(weights)
    check_weights(without_counters(weights),
                  resnet_weight_shapes(arch["block"], arch["blocks"], arch["widths"], arch["stem"],
                                       arch["stem_width"], output_stride), where="resnet weights")
    block = basic_block if arch["block"] == "basic" else bottleneck
    s = stem(x, weights)                                                       # (B, C, H0/2, W0/2)
    y = max_pool2d(s, 3, 2, 1)                                                 # (B, C, H0/4, W0/4)
    stages = {"stem": s, "maxpool": y} if return_stages else None
    del s
    for i, (stride, dilations) in enumerate(stage_plan(arch["blocks"], output_stride, multi_grid, dilated), 1):
        for j, d in enumerate(dilations):
            y = block(y, weights, f"layer{i}.{j}", stride if j == 0 else 1, d)  # (B, C_i, H, W)
            if return_stages:
                stages[f"layer{i}.{j}"] = y
        if return_stages:
            stages[f"layer{i}"] = y
    return (y, stages) if return_stages else y

