"""Evaluation: confusion matrix, mIoU, pixel accuracy, per-class IoU; whole-image, sliding-window,
flipped and multi-scale inference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline.datasets import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class; ignore-labelled pixels skipped."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = target != IGNORE_INDEX
    if np.any((target[keep] < 0) | (target[keep] >= num_classes)):
        raise ValueError(f"confusion_matrix: target values outside [0, {num_classes}) and not {IGNORE_INDEX}")
    idx = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(conf: np.ndarray, class_names=None) -> dict:
    """IoU_k = TP / (TP + FP + FN); mIoU averages the classes that occur (in truth or prediction)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    names = list(class_names) if class_names is not None else [str(k) for k in range(len(tp))]
    total = conf.sum()
    return {"miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)}}


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


def evaluate(model, dataset, preset, device: str | None = None, progress: bool = True,
             keep_predictions: int = 0) -> dict:
    """mIoU, pixel accuracy, per-class IoU and the confusion matrix of ``model`` on ``dataset``.

    ``keep_predictions`` returns the first few predicted label maps as well (for the report).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    K = dataset.NUM_CLASSES
    conf = np.zeros((K, K), np.int64)
    predictions = []
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, unit="img"):
        image, label = dataset[i]
        probs = predict_probs(model, image[None].to(device), preset.eval_mode, preset.eval_crop,
                              preset.eval_stride, preset.eval_flip, preset.eval_scales)
        pred = probs.argmax(1)[0].cpu().numpy()
        conf += confusion_matrix(pred, label.numpy(), K)
        if i < keep_predictions:
            predictions.append(pred.astype(np.uint8))
    result = metrics_from_confusion(conf, dataset.CLASS_NAMES)
    result["confusion"] = conf.tolist()
    result["num_images"] = len(dataset)
    if keep_predictions:
        result["predictions"] = predictions
    return result
