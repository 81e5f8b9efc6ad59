"""The layers of the network in NumPy, each as its torch module computes it at inference:
``nn.Conv2d`` (:func:`conv2d`), ``nn.BatchNorm2d`` with running statistics (:func:`batch_norm`),
``nn.MaxPool2d`` (:func:`max_pool2d`) and ``F.interpolate(mode="bilinear")``
(:func:`interpolate_bilinear`); and :func:`check_features`, the check every function of ``refimpl``
makes of a feature map (B, C, H, W): float32 or float64, four dimensions, finite where asked.
The backbone (``refimpl.backbone``) and the head (``refimpl.head``) both build on them.

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


DTYPES = (np.float32, np.float64)   # float16's 10-bit mantissa cannot meet the reference's tolerances


def check_features(A, where: str, finite: bool = True) -> tuple[int, int, int, int]:
    """Validate a feature map A of shape (B, C, H, W), float32 or float64, and return its shape.

    A NaN or inf in A is refused rather than propagated: through the softmax one bad position
    turns every output position into NaN, and a reference must say where a result went wrong.
    ``finite=False`` skips that full pass (layers inside the network check type and shape only).
    float16 is refused by name: the reference computes in the input's precision, and 16 bits cannot
    meet the tolerances it is checked to.
    """
    if not isinstance(A, np.ndarray) or not np.issubdtype(A.dtype, np.floating):
        raise TypeError(f"{where}: x must be a floating-point numpy array, got {type(A).__name__}"
                        + (f" of dtype {A.dtype}" if isinstance(A, np.ndarray) else ""))
    if A.dtype not in DTYPES:
        raise TypeError(f"{where}: x must be float32 or float64, got dtype {A.dtype}")
    if A.ndim != 4:
        raise ValueError(f"{where}: x must have shape (B, C, H, W), got {A.ndim} dimensions {A.shape}")
    bad = A.size - np.count_nonzero(np.isfinite(A)) if finite else 0
    if bad:
        raise ValueError(f"{where}: x holds {bad} non-finite values (NaN or inf) out of {A.size}")
    return A.shape


BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
_GEMM_DEPTH = 1024  # conv2d stacks kernel taps until a matrix product is this deep (C_in x taps)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
           stride: int = 1, padding: int | None = None, dilation: int = 1) -> np.ndarray:
    """2-D convolution (cross-correlation) with zero padding, as ``nn.Conv2d(k, stride, padding, dilation)``.

    .. math:: y_o(p) = b_o + \\sum_{dy,dx} W_{o,:,dy,dx} \\cdot x_{:}(s\\,p + d\\,(dy, dx) - \\text{pad})

    A k x k convolution is a sum of k*k 1x1 convolutions (matrix products over channels), one per
    kernel tap (dy, dx), each applied to the padded input shifted by d*(dy, dx) and subsampled by
    the stride s: "im2col by shifts". Taps are stacked along the channel axis in groups of about
    ``_GEMM_DEPTH`` rows (all 49 taps of the 3-channel stem in one product; one tap at a time for
    wide layers), so each matrix product is deep enough to run at GEMM speed and the stacked
    columns never exceed ~max(C_in, _GEMM_DEPTH) x N.

    Parameters
    ----------
    x : ndarray (B, C_in, H, W).
    weight : ndarray (C_out, C_in, kh, kw).
    bias : ndarray (C_out,) or None.
    stride, dilation : ints, as in ``nn.Conv2d``.
    padding : int, or None for 'same' padding ``dilation * (k // 2)`` (odd kernels only).

    Returns
    -------
    ndarray (B, C_out, H_out, W_out), x's dtype, with H_out = (H + 2 pad - d (kh - 1) - 1) // s + 1.
    """
    nb, C_in, H, W = check_features(x, "conv2d", finite=False)
    if not isinstance(weight, np.ndarray) or weight.ndim != 4:
        raise ValueError(f"conv2d: weight must have shape (C_out, C_in, kh, kw), got {np.shape(weight)}")
    C_out, C_w, kh, kw = weight.shape
    if bias is not None and np.shape(bias) != (C_out,):
        raise ValueError(f"conv2d: bias must have shape ({C_out},), got {np.shape(bias)}")
    if C_w != C_in:
        raise ValueError(f"conv2d: weight {weight.shape} does not fit input {x.shape} "
                         f"({C_w} input channels, expected {C_in})")
    if padding is None:
        if kh % 2 != 1 or kw % 2 != 1:
            raise ValueError(f"conv2d: padding=None ('same') needs an odd kernel, got weight {weight.shape}")
        ph, pw = dilation * (kh // 2), dilation * (kw // 2)
    else:
        ph = pw = padding
    s, d = stride, dilation
    Ho = (H + 2 * ph - d * (kh - 1) - 1) // s + 1
    Wo = (W + 2 * pw - d * (kw - 1) - 1) // s + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"conv2d: input {x.shape} is too small for weight {weight.shape} with "
                         f"stride {s}, padding {padding}, dilation {d}")
    N = Ho * Wo
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x  # (B, C_in, H+2ph, W+2pw)
    # column block t of W2 is the 1x1 weight of tap t = (dy, dx), row-major over the kernel
    W2 = weight.astype(x.dtype, copy=False).transpose(0, 2, 3, 1).reshape(C_out, kh * kw * C_in)  # (C_out, k*k*C_in)

    def shifted(dy, dx):  # what tap (dy, dx) sees at every output pixel
        r, c = dy * d, dx * d
        return x_pad[:, :, r:r + s * (Ho - 1) + 1:s, c:c + s * (Wo - 1) + 1:s].reshape(nb, C_in, N)  # (B, C_in, N)

    taps = [(dy, dx) for dy in range(kh) for dx in range(kw)]
    per = max(1, _GEMM_DEPTH // C_in)                                     # taps per matrix product
    y = None
    for t0 in range(0, len(taps), per):
        group = taps[t0:t0 + per]
        cols = np.concatenate([shifted(dy, dx) for dy, dx in group], axis=1) if len(group) > 1 \
            else shifted(*group[0])                                       # (B, g*C_in, N)
        part = W2[:, t0 * C_in:(t0 + len(group)) * C_in] @ cols           # (B, C_out, N)
        y = part if y is None else np.add(y, part, out=y)
    if bias is not None:
        y += bias.astype(x.dtype, copy=False)[:, None]
    return y.reshape(nb, C_out, Ho, Wo)                                   # (B, C_out, H_out, W_out)


def batch_norm(x, weight, bias, running_mean, running_var, eps: float = BN_EPS) -> np.ndarray:
    """BatchNorm at inference: :math:`y = (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} \\cdot w + b`, per channel."""
    C = check_features(x, "batch_norm", finite=False)[1]
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if np.shape(v) != (C,):
            raise ValueError(f"batch_norm: {name} must have shape ({C},), got {np.shape(v)}")
    dt = x.dtype
    scale = weight.astype(dt) / np.sqrt(running_var.astype(dt) + dt.type(eps))  # (C,)
    shift = bias.astype(dt) - running_mean.astype(dt) * scale                   # (C,)
    return x * scale[:, None, None] + shift[:, None, None]


def max_pool2d(x: np.ndarray, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> np.ndarray:
    """Max pooling, as ``nn.MaxPool2d(kernel_size, stride, padding)`` (ResNet's stem: 3, 2, 1).

    .. math:: y(p) = \\max_{0 \\le dy, dx < k} x(s\\,p + (dy, dx) - \\text{pad})

    Padding is -inf, so a padded cell never wins: every window holds at least one real pixel
    when ``padding <= kernel_size // 2`` (what torch requires).

    Parameters
    ----------
    x : ndarray (B, C, H, W), float32 or float64.

    Returns
    -------
    ndarray (B, C, H_out, W_out), H_out = (H + 2 pad - k) // s + 1.
    """
    nb, C, H, W = check_features(x, "max_pool2d", finite=False)
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
    x : ndarray (B, C, H, W), float32 or float64.
    size : (H_out, W_out).
    align_corners : the sample-point convention (module docstring); the official DANet uses True.

    Returns
    -------
    ndarray (B, C, H_out, W_out), x's dtype.
    """
    nb, C, H, W = check_features(x, "interpolate_bilinear", finite=False)
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
