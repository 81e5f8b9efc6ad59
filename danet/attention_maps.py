"""The attention of one image, read from a model's backbone features A: the PAM rows of a few
query pixels, the CAM matrix and the channel order it is shown in, and which feature cell and which
query pixels to show.

The explicit PAM forms an N×N matrix (4 GiB in float32 for a 1024×2048 image, N = 32,768);
:func:`pam_rows` computes only the q rows it is asked for, q×N numbers, and
:func:`pam_row_blocks` a block of rows at a time.
"""

from __future__ import annotations

import numpy as np
import torch


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
def cam_maps(model, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The CAM attention (C, C) of the image (row c: how channel c mixes the others) and its energy
    X = A'·A'ᵀ (C, C), A' = conv5c(A) the module's input, from one pass; None without CAM."""
    head = model.head
    if not hasattr(head, "sc"):
        return None
    _, parts = head.sc.forward_with_intermediates(head.conv5c(A))
    return parts["attention"][0], parts["X"][0]                       # (C, C), (C, C)


def cam_matrix(model, A: torch.Tensor) -> torch.Tensor | None:
    """The CAM attention (C, C) of :func:`cam_maps`; None without CAM."""
    maps = cam_maps(model, A)
    return None if maps is None else maps[0]


def cam_order(X: np.ndarray) -> np.ndarray:
    """The order in which the CAM matrix is shown (rows and columns alike): channels with similar energy
    rows X = A·Aᵀ (C, C) side by side, the leaves of an average-linkage clustering of the rows
    (correlation distance). The order of channels in a network means nothing; sorted, blocks appear."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    rows = np.asarray(X, np.float64) - np.mean(X, axis=1, keepdims=True)   # (C, C)
    flat = np.linalg.norm(rows, axis=1) == 0                          # a constant row has no correlation
    rows[flat] = np.random.default_rng(0).normal(size=(int(flat.sum()), X.shape[1])) * 1e-12
    return leaves_list(linkage(rows, method="average", metric="correlation"))


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
