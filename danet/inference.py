"""Inference on a user's images: reading and normalising, whole-image, sliding-window and flipped
prediction, the PAM rows of a few query pixels, the CAM matrix, and the NumPy-vs-PyTorch check of
the whole network stage by stage.

Images are normalised by :func:`danet.preprocess.normalize` (ImageNet mean and std on RGB in
[0, 1]), the one normalisation ``pipeline.datasets`` uses too; errors are
:func:`danet.numerics.rel_err`.

Memory on a large image: the explicit PAM forms an N×N matrix (4 GiB in float32 for a 1024×2048
image, N = 32,768), so :func:`predict` expects a model built with ``pam_impl="chunked"`` and
:func:`pam_rows` computes only the q rows it is asked for, q×N numbers.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from danet.numerics import TOLERANCE, rel_err  # noqa: F401 -- rel_err is part of this module's API
from danet.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize  # noqa: F401 -- likewise


# --------------------------------------------------------------------------- images

DEFAULT_MAX_PIXELS = 32_000_000   # 8000×4000; a 10000×10000 image needs over 6 GiB to predict


def read_image(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3), fully decoded; a ValueError naming the file otherwise.

    16-bit images (PNG modes ``I;16``/``I``) are scaled by their real range, round(v · 255 / 65535),
    not clipped to 8 bits; 32-bit ones (``F``, a TIFF's ``I``) have no known range and are refused.
    An image over ``max_pixels`` (None: no limit) is refused from its header, before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            W, H = img.size
            if max_pixels and H * W > max_pixels:
                raise ValueError(f"image '{path}': {H}×{W} = {H * W / 1e6:.1f} Mpixel is over the limit of "
                                 f"{max_pixels / 1e6:.1f} Mpixel (memory grows with the pixels: over 6 GiB at "
                                 f"100 Mpixel); resize it, or raise the limit (danet: --max-pixels N)")
            img.load()
            if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
                v = np.asarray(img, np.float64)                              # (H, W) in 0 ... 65535
                return np.repeat(np.round(v * (255 / 65535)).astype(np.uint8)[..., None], 3, axis=2)
            if img.mode in ("I", "F"):
                raise ValueError(f"image '{path}': mode '{img.mode}' (32-bit) has no known range; "
                                 f"save it as 8- or 16-bit")
            return np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"image '{path}': no such file") from None
    except IsADirectoryError:
        raise ValueError(f"image '{path}': is a directory, not an image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if str(e).startswith(f"image '{path}'"):                       # ours, already one line
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"image '{path}': not a readable image ({first})") from None


# --------------------------------------------------------------------------- class probabilities

def _forward_probs(model, x: torch.Tensor) -> torch.Tensor:
    """Softmax of the evaluated (first) output, (B, K, H, W)."""
    return torch.softmax(model(x)[0].float(), dim=1)


def sliding_window(model, x: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """Probabilities from overlapping crop×crop windows, averaged where they overlap.

    The image is padded (zeros: the mean colour after normalisation) up to at least one crop.
    """
    _, _, H, W = x.shape
    ph, pw = max(crop - H, 0), max(crop - W, 0)
    xp = F.pad(x, (0, pw, 0, ph))
    Hp, Wp = xp.shape[2:]
    probs, count = None, torch.zeros(1, 1, Hp, Wp, device=x.device)
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
                probs = torch.zeros(x.shape[0], p.shape[1], Hp, Wp, device=x.device)
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


# --------------------------------------------------------------------------- attention

def feature_cell(y: int, x: int, H: int, W: int, h: int, w: int, align_corners: bool) -> tuple[int, int]:
    """The feature cell (i, j) nearest to image pixel (y, x), under the model's resize convention."""
    def one(p, size, n):
        c = p * (n - 1) / max(size - 1, 1) if align_corners else (p + 0.5) * n / size - 0.5
        return min(max(int(round(c)), 0), n - 1)

    return one(y, H, h), one(x, W, w)


@torch.no_grad()
def pam_row_blocks(model, A: torch.Tensor, cells, block: int = 256):
    """Yield the rows of the PAM attention S = softmax(BᵀC) for the feature cells ``cells``,
    ``block`` of them at a time, each block as an (n, h, w) tensor.

    Straight from the module's 1×1 convolutions: for the query cells' features F_q (C, n),
    B_q = W_B·F_q + b_B (C', n), C = key_conv(F) (C', N) once, and S_q = softmax(B_qᵀ·C) (n, N) --
    at most block×N numbers of S at a time, never N×N. The model must have a PAM.
    """
    head = model.head
    sa = head.sa
    feat1 = head.conv5a(A)[0]                                          # (C, h, w)
    C, h, w = feat1.shape
    flat = feat1.reshape(C, h * w)                                     # (C, N)
    Wq = sa.query_conv.weight.reshape(-1, C)                           # (C', C)
    Ck = sa.key_conv(feat1[None]).reshape(-1, h * w)                   # (C', N)
    for k in range(0, len(cells), block):
        idx = torch.tensor([i * w + j for i, j in cells[k:k + block]])
        Bq = Wq @ flat[:, idx] + sa.query_conv.bias[:, None]           # (C', n)
        S = torch.softmax(Bq.T @ Ck, dim=-1)                           # (n, N)
        yield S.reshape(len(idx), h, w)                                # (n, h, w)


@torch.no_grad()
def pam_rows(model, A: torch.Tensor, cells) -> torch.Tensor | None:
    """Rows of the PAM attention S for the given feature cells, as (q, h, w) maps -- q×N numbers,
    never N×N (:func:`pam_row_blocks` in one block). None if the model has no PAM."""
    if not hasattr(model.head, "sa"):
        return None
    return next(pam_row_blocks(model, A, list(cells), max(len(cells), 1)))


@torch.no_grad()
def cam_matrix(model, A: torch.Tensor) -> torch.Tensor | None:
    """The CAM attention (C, C) of the image (row c: how channel c mixes the others); None without CAM."""
    head = model.head
    if not hasattr(head, "sc"):
        return None
    return head.sc.attention(head.conv5c(A))[0]                        # (C, C)


def region_queries(label: np.ndarray, max_queries: int = 3, min_share: float = 0.05) -> list[tuple[int, int]]:
    """One query pixel (y, x) per large predicted class (at least ``min_share`` of the image, largest
    first, at most ``max_queries``): the class's pixel nearest its centroid, so it lies on the region."""
    counts = np.bincount(label.ravel())
    picks = []
    for c in np.argsort(-counts, kind="stable")[:max_queries]:
        if picks and counts[c] < min_share * label.size:             # the largest class always gets one
            break
        ys, xs = np.nonzero(label == c)
        i = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        picks.append((int(ys[i]), int(xs[i])))
    return picks


@torch.no_grad()
def predict_image(model, image: np.ndarray, queries=None, sliding: tuple | None = None, flip: bool = False) -> dict:
    """Everything ``danet predict`` shows of one uint8 (H, W, 3) image.

    Returns ``{"label": (H, W) int64 argmax classes, "queries": [(y, x)], "cells": [(i, j)] their
    feature cells, "pam_rows": (q, h, w) or None, "cam": (C, C) or None, "gamma_pam", "beta_cam"}``;
    ``queries`` default to one pixel per large predicted class (:func:`region_queries`).
    """
    H, W = image.shape[:2]
    x = normalize(image, next(model.parameters()).dtype)              # (1, 3, H, W), the model's precision
    probs, A = predict(model, x, sliding, flip)                        # (1, K, H, W), (1, C_in, h, w)
    h, w = A.shape[2:]
    label = probs.argmax(1)[0].numpy()                                # (H, W)
    queries = [tuple(q) for q in (queries or region_queries(label))]
    cells = [feature_cell(y, x, H, W, h, w, model.align_corners) for y, x in queries]
    rows, cam = pam_rows(model, A, cells), cam_matrix(model, A)
    return {"label": label, "queries": queries, "cells": cells,
            "pam_rows": None if rows is None else rows.numpy(), "cam": None if cam is None else cam.numpy(),
            **model.gammas()}


def histogram(label: np.ndarray, names) -> dict:
    """``{class name: pixel count}`` of the classes present, largest first."""
    counts = np.bincount(label.ravel(), minlength=len(names))
    return {names[c]: int(counts[c]) for c in np.argsort(-counts, kind="stable") if counts[c] > 0}


# --------------------------------------------------------------------------- NumPy vs PyTorch

def architecture(model, info) -> dict:
    """The ``refimpl.danet_forward`` arguments that make it the same network as ``model``."""
    convs = [m for m in model.pretrained.layer4.modules() if isinstance(m, torch.nn.Conv2d)]
    return {"backbone": info.backbone, "stem": info.stem, "stem_width": info.stem_width,
            "output_stride": info.output_stride, "multi_grid": info.multi_grid,
            "dilated": info.output_stride == 32 or any(c.dilation[0] > 1 for c in convs),
            "align_corners": model.align_corners, "cam_variant": model.head.sc.variant}


@torch.no_grad()
def torch_stages(model, x: torch.Tensor) -> dict:
    """The stages of one ``DANet.forward``, caught by forward hooks, named as ``refimpl.danet_forward`` names them."""
    bb, head, st, hooks = model.pretrained, model.head, {}, []

    def catch(module, name):
        hooks.append(module.register_forward_hook(lambda m, i, out: st.__setitem__(name, out.clone())))

    catch(bb.relu, "stem")                                             # ResNet.relu is the stem's ReLU only
    catch(bb.maxpool, "maxpool")
    for i in range(1, 5):
        for j, block in enumerate(getattr(bb, f"layer{i}")):
            catch(block, f"layer{i}.{j}")
        catch(getattr(bb, f"layer{i}"), f"layer{i}")
    for name in ("conv5a:feat1", "sa:sa_feat", "conv51:sa_conv", "conv5c:feat2", "sc:sc_feat", "conv52:sc_conv"):
        attr, name = name.split(":")
        catch(getattr(head, attr), name)
    hooks.append(head.register_forward_hook(
        lambda m, i, out: st.update(zip(("fused_lowres", "pam_lowres", "cam_lowres"), out))))
    try:
        outputs = model(x)
    finally:
        for h in hooks:
            h.remove()
    st["feat_sum"] = st["sa_conv"] + st["sc_conv"]                     # the input of conv8
    st.update(zip(("fused", "pam", "cam"), outputs))
    return st


def check(model, info, image: np.ndarray, dtype: str = "float64") -> dict:
    """``refimpl.danet_forward`` against the PyTorch model on one uint8 image, stage by stage.

    Returns ``{"dtype", "image_size", "stages": {stage: max rel error}, "overall_max_rel_error",
    "first_stage_over_1e-10", "seconds": {"numpy", "torch"}}``; errors are normwise,
    max|NumPy − torch| / max|torch|, in the stage order of ``danet_forward``.
    """
    import refimpl
    from danet.export import state_dict_to_numpy

    if info.attention != "both":
        raise ValueError(f"checkpoint '{info.file}': check needs both attention modules (the whole DANet), "
                         f"this one has attention={info.attention!r}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    twin = copy.deepcopy(model).to(getattr(torch, dtype)).eval()
    x = normalize(image, getattr(torch, dtype))                        # (1, 3, H0, W0)
    weights = {k: v for k, v in state_dict_to_numpy(twin).items() if not k.startswith("auxlayer.")}
    t0 = time.perf_counter()
    *_, ours = refimpl.danet_forward(x.numpy(), weights, return_stages=True, **architecture(model, info))
    t_numpy = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = torch_stages(twin, x)
    t_torch = time.perf_counter() - t0
    missing = sorted(set(ours) ^ set(theirs))
    if missing:
        raise RuntimeError(f"check: NumPy and torch name different stages: {missing}")
    stages = {name: rel_err(ours[name], theirs[name].numpy()) for name in ours}
    return {"dtype": dtype, "image_size": list(image.shape[:2]), "stages": stages,
            "overall_max_rel_error": max(stages.values()),
            "first_stage_over_1e-10": next((n for n, e in stages.items() if e > TOLERANCE["float64"]), None),
            "seconds": {"numpy": round(t_numpy, 3), "torch": round(t_torch, 3)}}
