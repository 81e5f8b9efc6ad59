"""Class probabilities of one image or a batch: whole-image, sliding-window, flipped and
multi-scale prediction, shared by ``danet predict`` and the pipeline's evaluation; and
:func:`predict_image`, everything ``danet predict`` shows of one image (labels, the PAM rows of a
few query pixels, the CAM matrix, the learnt γ and β).

Images are normalised by :func:`danet.preprocess.normalize` (ImageNet mean and std on RGB in
[0, 1]), the one normalisation ``pipeline.datasets`` uses too.

Memory on a large image: the explicit PAM forms an N×N matrix (4 GiB in float32 for a 1024×2048
image, N = 32,768), so :func:`predict` expects a model built with ``pam_impl="chunked"``.

How views are combined: the softmax probabilities of the flips, windows and scales are averaged;
windows lie on a stride grid whose last row and column are moved back to end at the image border
(as mmsegmentation's slide inference, which averages window logits, then probabilities over flips
and scales); an image smaller than the crop is padded with zeros (the mean colour). The authors'
``MultiEvalModule`` (``encoding/models/sseg/base.py``) sums the *logits* of an image and its mirror
and exponentiates the sum (so its flip is logit averaging), averages those exp-sums over windows,
pads with black (−mean/std) and pads the last window instead of moving it. One view gives the same
argmax either way; where flips or windows disagree the rules can pick different classes, so an
mIoU measured here can differ from theirs in its last digits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from danet.attention_maps import cam_maps, cam_order, feature_cell, pam_rows, region_queries
from danet.preprocess import normalize


def _forward_probs(model, x: torch.Tensor) -> torch.Tensor:
    """Softmax of the evaluated (first) output, (B, K, H, W): float64 for a float64 model, else float32."""
    logits = model(x)[0]
    return torch.softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=1)


def sliding_window(model, x: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """Probabilities from overlapping crop×crop windows, averaged where they overlap.

    The image is padded (zeros: the mean colour after normalisation) up to at least one crop.
    A stride over the crop is refused: the pixels between windows would get 0/0 probabilities.
    """
    if not 0 < stride <= crop:
        raise ValueError(f"sliding-window evaluation: stride {stride} must be in [1, crop {crop}], "
                         f"or pixels between windows get no prediction")
    _, _, H, W = x.shape
    ph, pw = max(crop - H, 0), max(crop - W, 0)
    xp = F.pad(x, (0, pw, 0, ph))
    Hp, Wp = xp.shape[2:]
    probs, count = None, torch.zeros(1, 1, Hp, Wp, device=x.device)   # count: small integers, exact in float32
    ys = list(range(0, max(Hp - crop, 0) + 1, stride))
    xs = list(range(0, max(Wp - crop, 0) + 1, stride))
    if ys[-1] + crop < Hp:
        ys.append(Hp - crop)
    if xs[-1] + crop < Wp:
        xs.append(Wp - crop)
    for y0 in ys:
        for x0 in xs:
            p = _forward_probs(model, xp[:, :, y0:y0 + crop, x0:x0 + crop])
            if probs is None:
                probs = torch.zeros(x.shape[0], p.shape[1], Hp, Wp, dtype=p.dtype, device=x.device)
            probs[:, :, y0:y0 + crop, x0:x0 + crop] += p
            count[:, :, y0:y0 + crop, x0:x0 + crop] += 1
    return (probs / count)[:, :, :H, :W]


@torch.no_grad()
def predict_probs(model, x: torch.Tensor, mode: str = "whole", crop: int | None = None,
                  stride: int | None = None, flip: bool = False, scales=(1.0,)) -> torch.Tensor:
    """Class probabilities (B, K, H, W) for a normalised batch x, averaged over scales and flips."""
    if mode not in ("whole", "sliding"):
        raise ValueError(f"eval mode must be 'whole' or 'sliding', got {mode!r}")
    if mode == "sliding" and not (crop and stride):
        raise ValueError("sliding-window evaluation needs eval_crop and eval_stride")
    H, W = x.shape[2:]
    total = 0
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=True)
        for flipped in ([False, True] if flip else [False]):
            xi = xs.flip(3) if flipped else xs
            p = sliding_window(model, xi, crop, stride) if mode == "sliding" else _forward_probs(model, xi)
            p = p.flip(3) if flipped else p
            if p.shape[2:] != (H, W):
                p = F.interpolate(p, (H, W), mode="bilinear", align_corners=True)
            total = total + p
    return total / (len(scales) * (2 if flip else 1))


@torch.no_grad()
def predict(model, x: torch.Tensor, sliding: tuple | None = None, flip: bool = False):
    """``(probs (1, K, H0, W0), A (1, C_in, h, w))``: class probabilities of one normalised image
    (whole, or ``sliding=(crop, stride)`` windows; ``flip`` averages the mirrored image in) and
    the backbone features of the whole image, which the attention figures read.

    In whole-image mode the features are caught from the prediction's own forward pass (a hook on
    the backbone), so the backbone runs once; with windows it runs once more on the whole image.
    """
    caught = {}

    def catch(module, inputs, output):
        if inputs[0] is x:                      # the unflipped whole image, not a window or its mirror
            caught["A"] = output

    hook = model.pretrained.register_forward_hook(catch)
    try:
        mode, (crop, stride) = ("sliding", sliding) if sliding else ("whole", (None, None))
        probs = predict_probs(model, x, mode, crop, stride, flip)
    finally:
        hook.remove()
    return probs, caught["A"] if "A" in caught else model.features(x)


@torch.no_grad()
def predict_image(model, image: np.ndarray, queries=None, sliding: tuple | None = None, flip: bool = False) -> dict:
    """Everything ``danet predict`` shows of one uint8 (H, W, 3) image.

    Returns ``{"label": (H, W) int64 argmax classes, "queries": [(y, x)], "cells": [(i, j)] their
    feature cells, "pam_rows": (q, h, w) or None, "cam": (C, C) or None, "cam_order": (C,) the order it is
    shown in (:func:`danet.attention_maps.cam_order`) or None, "gamma_pam", "beta_cam"}``;
    ``queries`` default to one pixel per large predicted class (:func:`region_queries`).
    """
    H, W = image.shape[:2]
    x = normalize(image, next(model.parameters()).dtype)              # (1, 3, H, W), the model's precision
    probs, A = predict(model, x, sliding, flip)                        # (1, K, H, W), (1, C_in, h, w)
    h, w = A.shape[2:]
    label = probs.argmax(1)[0].numpy()                                # (H, W)
    queries = [tuple(q) for q in (queries or region_queries(label))]
    cells = [feature_cell(y, x, H, W, h, w, model.align_corners) for y, x in queries]
    rows, cam = pam_rows(model, A, cells), cam_maps(model, A)          # cam: (attention, energy X) or None
    return {"label": label, "queries": queries, "cells": cells,
            "pam_rows": None if rows is None else rows.numpy(), "cam": None if cam is None else cam[0].numpy(),
            "cam_order": None if cam is None else cam_order(cam[1].numpy()), **model.gammas()}


def histogram(label: np.ndarray, names) -> dict:
    """``{class name: pixel count}`` of the classes present, largest first."""
    counts = np.bincount(label.ravel(), minlength=len(names))
    return {names[c]: int(counts[c]) for c in np.argsort(-counts, kind="stable") if counts[c] > 0}
