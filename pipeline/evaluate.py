"""Evaluation: confusion matrix, mIoU, pixel accuracy, per-class IoU of a model on a dataset.

Whole-image, sliding-window, flipped and multi-scale inference (``predict_probs``,
``sliding_window``) live in :mod:`danet.prediction`, shared with the ``danet predict`` command.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from danet.prediction import predict_probs
from pipeline.datasets import IGNORE_INDEX, DatasetError


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class; ignore-labelled pixels skipped.

    A prediction of another shape than its label, or outside [0, K), is refused: flattened, it would
    pair pixels with other pixels' labels, or count class K as "true t + 1, predicted 0".
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: prediction of shape {pred.shape} and label of shape {target.shape}; "
                         f"resize the prediction to the label first")
    pred, target = pred.ravel(), target.ravel()
    keep = target != IGNORE_INDEX
    if np.any((target[keep] < 0) | (target[keep] >= num_classes)):
        raise ValueError(f"confusion_matrix: target values outside [0, {num_classes}) and not {IGNORE_INDEX}")
    bad = (pred[keep] < 0) | (pred[keep] >= num_classes)
    if np.any(bad):
        raise ValueError(f"confusion_matrix: prediction values {np.unique(pred[keep][bad])[:10].tolist()} outside "
                         f"[0, {num_classes}): the model has more classes than the dataset")
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
    if len(names) != len(tp):
        raise ValueError(f"metrics_from_confusion: {len(names)} class names for a {len(tp)}-class confusion matrix")
    total = conf.sum()
    return {"miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)}}


def evaluate(model, dataset, preset, device: str | None = None, progress: bool = True,
             keep_predictions: int = 0, on_progress=None) -> dict:
    """mIoU, pixel accuracy, per-class IoU and the confusion matrix of ``model`` on ``dataset``.

    ``keep_predictions`` returns the first few predicted label maps as well (for the report);
    ``on_progress(images_done, total, None, eta_s)`` is called after every image. A split whose
    labels its publisher withholds (the dataset's ``UNLABELLED_SPLITS``, e.g. Cityscapes ``test``)
    is refused with a :class:`~pipeline.datasets.DatasetError` saying why and what to do instead.
    """
    split = getattr(dataset, "split", None)
    unlabelled = getattr(dataset, "UNLABELLED_SPLITS", {})
    if split in unlabelled:
        raise DatasetError(f"cannot evaluate on {type(dataset).__name__} split {split!r}: {unlabelled[split]}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    K = dataset.NUM_CLASSES
    conf = np.zeros((K, K), np.int64)
    predictions = []
    t0 = time.perf_counter()
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, unit="img"):
        image, label = dataset[i]
        probs = predict_probs(model, image[None].to(device), preset.eval_mode, preset.eval_crop,
                              preset.eval_stride, preset.eval_flip, preset.eval_scales)
        pred = probs.argmax(1)[0].cpu().numpy()
        conf += confusion_matrix(pred, label.numpy(), K)
        if i < keep_predictions:
            predictions.append(pred.astype(np.uint8))
        if on_progress is not None:
            rate = (time.perf_counter() - t0) / (i + 1)
            on_progress(i + 1, len(dataset), None, rate * (len(dataset) - i - 1))
    result = metrics_from_confusion(conf, dataset.CLASS_NAMES)
    result["confusion"] = conf.tolist()
    result["num_images"] = len(dataset)
    if keep_predictions:
        result["predictions"] = predictions
    return result
