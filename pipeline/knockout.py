"""Which attention module a trained DANet relies on: per-class IoU with PAM or CAM switched off,
and the share of PAM's attention that falls on a class against that class's share of the image.

Switching a module off sets its learned scale to 0 (γ for PAM, β for CAM): the module is then the
identity, out = 0·E + A = A, and the rest of the network runs unchanged. What the IoU loses is what
the network took from that module. Used by the report (:mod:`pipeline.report`) and by
``benchmarks/bench_ablation.py --key-share``.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.evaluate import confusion_matrix, metrics_from_confusion


def cell_labels(label: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W) labels -> (h, w): the label at the centre pixel of each feature cell."""
    H, W = label.shape
    return label[(np.arange(h) * H // h + H // (2 * h))[:, None], (np.arange(w) * W // w + W // (2 * w))[None, :]]


@torch.no_grad()
def per_class_iou(model, dataset) -> dict:
    """IoU of every class (name -> IoU or None), fused output, whole images at their own size."""
    k = dataset.NUM_CLASSES
    conf = np.zeros((k, k), np.int64)
    for i in range(len(dataset)):
        image, label = dataset[i]
        conf += confusion_matrix(model(image[None])[0].argmax(dim=1)[0].numpy(), label.numpy(), k)
    return metrics_from_confusion(conf, dataset.CLASS_NAMES)["per_class_iou"]


@torch.no_grad()
def knock_out(model, dataset) -> dict:
    """``{"full", "pam_off", "cam_off"}`` -> per-class IoU of the model as trained, with γ = 0 and with
    β = 0 (a module the model lacks is reported as absent: no key)."""
    model.eval()
    result = {"full": per_class_iou(model, dataset)}
    for name, module in (("pam_off", "sa"), ("cam_off", "sc")):
        if not hasattr(model.head, module):
            continue
        scale = getattr(model.head, module).gamma
        kept = scale.item()
        scale.fill_(0.0)
        try:
            result[name] = per_class_iou(model, dataset)
        finally:
            scale.fill_(kept)
    return result


@torch.no_grad()
def key_share(model, dataset, query_classes=(1, 2), key_class: int = 3) -> tuple[float, float]:
    """(share of a query-class cell's PAM row on the ``key_class`` cells, those cells' share of all N
    cells), each a mean over every query-class cell of every image; the built-in data's default:
    keyed shapes look at the key. Uniform attention would make the two equal."""
    shares, areas = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        feat1 = model.head.conv5a(model.features(image[None]))          # (1, C_i, h, w)
        S = model.head.sa.attention(feat1)[0].numpy()                    # (N, N)
        cells = cell_labels(label.numpy(), *feat1.shape[2:]).ravel()    # (N,)
        for q in np.nonzero(np.isin(cells, query_classes))[0]:
            shares.append(S[q, cells == key_class].sum())
            areas.append((cells == key_class).mean())
    return (float(np.mean(shares)), float(np.mean(areas))) if shares else (float("nan"), float("nan"))
