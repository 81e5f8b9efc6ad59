"""Max pooling and bilinear resizing in NumPy, as ``nn.MaxPool2d`` and ``F.interpolate(mode="bilinear")``.

The dilated ResNet's stem ends in a 3x3 max pool of stride 2 (padding 1); DANet resizes its three
logit maps from 1/8 of the input back to the input size bilinearly. Two conventions place the
sample points, and checkpoints are trained with one or the other:

- ``align_corners=True`` (the authors' code): the corner pixels of input and output coincide,
  source coordinate ``x = i (n_in - 1) / (n_out - 1)``.
- ``align_corners=False`` (mmsegmentation): pixels are unit squares whose centres are aligned,
  ``x = (i + 1/2) n_in / n_out - 1/2``, clamped at 0 as torch does (near the top-left border the
  formula goes negative; torch reads pixel 0 there rather than extrapolating).
"""

from __future__ import annotations

import numpy as np


def max_pool2d(x: np.ndarray, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> np.ndarray:
    """Max pooling, as ``nn.MaxPool2d(kernel_size, stride, padding)`` (ResNet's stem: 3, 2, 1).

    .. math:: y(p) = \\max_{0 \\le dy, dx < k} x(s\\,p + (dy, dx) - \\text{pad})

    Padding is -inf, so a padded cell never wins: every window holds at least one real pixel
    when ``padding <= kernel_size // 2`` (what torch requires).

    Parameters
    ----------
    x : ndarray (B, C, H, W), floating point.

    Returns
    -------
    ndarray (B, C, H_out, W_out), H_out = (H + 2 pad - k) // s + 1.
    """
    nb, C, H, W = x.shape
    k, s, p = kernel_size, stride, padding
    if p > k // 2:
        raise ValueError(f"max_pool2d: padding {p} must be at most kernel_size // 2 = {k // 2}")
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"max_pool2d: input {x.shape} is too small for a {k}x{k} window")
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)  # (B, C, H+2p, W+2p)
    y = np.full((nb, C, Ho, Wo), -np.inf, dtype=x.dtype)                             # (B, C, Ho, Wo)
    for dy in range(k):
        for dx in range(k):
            np.maximum(y, x_pad[:, :, dy:dy + s * (Ho - 1) + 1:s, dx:dx + s * (Wo - 1) + 1:s], out=y)
    return y


def bilinear_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """The (n_out, n_in) matrix M of 1-D linear interpolation: ``y = M @ x`` resizes x to n_out samples.

    .. math::
        x_i = \\begin{cases} i\\,\\frac{n_{in} - 1}{n_{out} - 1} & \\text{align\\_corners} \\\\
              \\max\\left(0,\\ (i + \\tfrac12)\\,\\frac{n_{in}}{n_{out}} - \\tfrac12\\right) & \\text{otherwise}
              \\end{cases} \\\\
        M_{i, \\lfloor x_i \\rfloor} \\mathrel{+}= 1 - \\lambda_i,\\quad
        M_{i, \\min(\\lfloor x_i \\rfloor + 1,\\ n_{in} - 1)} \\mathrel{+}= \\lambda_i,\\quad
        \\lambda_i = x_i - \\lfloor x_i \\rfloor

    Each row has at most two non-zeros summing to 1. Past the last pixel (align_corners=False
    can put x_i beyond n_in - 1) both weights land on the last pixel, as in torch.
    The coordinates are computed in float64 (torch computes them in the input's precision).
    """
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)   # torch clamps negative coordinates to 0
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    M = np.zeros((n_out, n_in))
    np.add.at(M, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(M, (np.arange(n_out), i1), lam)
    return M


def interpolate_bilinear(x: np.ndarray, size: tuple[int, int], *, align_corners: bool) -> np.ndarray:
    """Bilinear resize to ``size``, as ``F.interpolate(x, size, mode="bilinear", align_corners=...)``.

    .. math:: Y = M_H\\, X\\, M_W^\\top \\quad \\text{for each image and channel}

    Bilinear interpolation is separable: linear interpolation along H (matrix M_H, see
    :func:`bilinear_matrix`), then along W (M_W).

    Parameters
    ----------
    x : ndarray (B, C, H, W), floating point.
    size : (H_out, W_out).
    align_corners : the sample-point convention (module docstring); the official DANet uses True.

    Returns
    -------
    ndarray (B, C, H_out, W_out), x's dtype.
    """
    nb, C, H, W = x.shape
    Ho, Wo = size
    if Ho < 1 or Wo < 1:
        raise ValueError(f"interpolate_bilinear: size must be positive, got {size}")
    M_H = bilinear_matrix(H, Ho, align_corners).astype(x.dtype)        # (Ho, H)
    M_W = bilinear_matrix(W, Wo, align_corners).astype(x.dtype)        # (Wo, W)
    # two plain 2-D matrix products (a stack of small ones broadcast against M would not run as GEMMs)
    T = x.reshape(nb * C * H, W) @ M_W.T                               # (B*C*H, Wo)   along W
    T = T.reshape(nb * C, H, Wo).transpose(1, 0, 2).reshape(H, nb * C * Wo)  # (H, B*C*Wo)
    Y = M_H @ T                                                        # (Ho, B*C*Wo)  along H
    return np.ascontiguousarray(Y.reshape(Ho, nb, C, Wo).transpose(1, 2, 0, 3))  # (B, C, Ho, Wo)
