"""Softmax, the Position Attention Module and the Channel Attention Module in NumPy.

Reference: Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019
(arXiv:1809.02983), Sections 3.2 and 3.3; and the authors' released code
(``encoding/nn/da_att.py``: ``PAM_Module``, ``CAM_Module``), which this file follows exactly where
it differs from the paper's prose.

Symbols: ``nb`` batch size (B in shape comments), C channels, H, W height and width,
N = H*W positions. The paper's feature maps keep their letters: A (input), B, C, D (the PAM's
query, key and value maps), S (position attention), E (PAM output), X (channel attention), β, γ.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from refimpl.layers import DTYPES, check_features
from refimpl.weights import check_weights

def softmax(x: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """Numerically stable softmax along ``axis``.

    .. math:: \\mathrm{softmax}(x)_j = \\frac{\\exp(x_j - m)}{\\sum_k \\exp(x_k - m)},
              \\quad m = \\max_k x_k

    Subtracting the maximum changes nothing mathematically (numerator and denominator are both
    multiplied by exp(-m)) but keeps every exponent <= 0, so exp never overflows; the largest
    term is exp(0) = 1, so the denominator is >= 1 and never underflows to 0.

    A NaN or +inf anywhere in a row, or a row of only -inf, would make the whole row NaN: it is
    refused, as the PAM refuses a non-finite feature map (checked on the row maxima m, no extra
    pass). A -inf beside finite values is a mask: its weight is exactly 0.

    Parameters
    ----------
    x : ndarray, float32 or float64 (float16 is refused, as everywhere in ``refimpl``), any shape.
    axis : the axis that sums to one.
    out : optional array to write into; ``out=x`` computes in place (no N x N temporary, which
        matters for the PAM's attention matrix).

    Returns
    -------
    ndarray of the same shape and dtype as ``x``.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"softmax: x must be a floating-point array, got dtype {x.dtype}")
    if x.dtype not in DTYPES:
        raise TypeError(f"softmax: x must be float32 or float64, got dtype {x.dtype}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"softmax: axis must be an int in [-{x.ndim}, {x.ndim}) for x of shape {x.shape}, "
                         f"got {axis!r}")
    if out is not None and (not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype):
        raise ValueError(f"softmax: out must be an array of x's shape {x.shape} and dtype {x.dtype}, got "
                         f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}".rstrip())
    m = x.max(axis=axis, keepdims=True)                            # NaN if the row holds a NaN
    bad = m.size - np.count_nonzero(np.isfinite(m))
    if bad:
        raise ValueError(f"softmax: x holds NaN or +inf (or a row of only -inf) in {bad} of {m.size} rows")
    e = np.subtract(x, m, out=out)                                 # every exponent <= 0
    np.exp(e, out=e)
    e *= 1 / e.sum(axis=axis, keepdims=True)                       # one reciprocal per row
    return e


def _gamma(weights: Mapping[str, np.ndarray], where: str, dtype) -> np.ndarray:
    g = np.asarray(weights["gamma"])
    if g.shape != (1,):
        raise ValueError(f"{where}: 'gamma' must have shape (1,), got {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"{where}: 'gamma' must be finite, got {g[0]}")
    return g.astype(dtype, copy=False)[0]


def pam_weight_shapes(C: int, Cr: int) -> dict:
    """Shapes of the PAM ``state_dict`` for C input channels and C' = Cr query/key channels."""
    return {"query_conv.weight": (Cr, C, 1, 1), "query_conv.bias": (Cr,),
            "key_conv.weight": (Cr, C, 1, 1), "key_conv.bias": (Cr,),
            "value_conv.weight": (C, C, 1, 1), "value_conv.bias": (C,), "gamma": (1,)}


def _conv1x1(A_flat: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 1x1 convolution is a matrix product over channels: W (C_out, C) @ A (B, C, N) + b."""
    C_out = weight.shape[0]
    W2 = weight.reshape(C_out, -1).astype(A_flat.dtype, copy=False)   # (C_out, C)
    return W2 @ A_flat + bias.astype(A_flat.dtype, copy=False)[:, None]  # (B, C_out, N)


BLOCK_ELEMENTS = 2**24  # default query block: at most this many elements of P (64 MiB in float32)


def position_attention(x, weights, *, chunk_size=None, return_attention=False,
                       return_intermediates=False):
    """Position Attention Module (paper Sec. 3.2, eqs. 1-2; official ``PAM_Module``).

    .. math::
        B = W_q A + b_q,\\quad C = W_k A + b_k,\\quad D = W_v A + b_v \\\\
        S = \\mathrm{softmax}_{\\text{rows}}(B^\\top C) \\in \\mathbb{R}^{N\\times N},\\quad
        s_{ij} = \\frac{\\exp(B_i \\cdot C_j)}{\\sum_j \\exp(B_i \\cdot C_j)} \\\\
        E = D S^\\top,\\qquad \\text{out} = \\gamma E + A

    Row i of S says how much position i attends to each position j; column i of E is the
    S-weighted average of the value vectors, E_i = sum_j s_ij D_j. There is no 1/sqrt(d)
    scaling (unlike the Transformer), as in the official code.

    Two computations of this equation, the same numbers up to rounding:

    - explicit (with ``return_attention`` or ``return_intermediates``): the whole energy
      B^T C and S = softmax(B^T C), as the official code;
    - query blocks (otherwise), normalised after the product, see :func:`_pam_block`:

      .. math::
          P = \\exp(B^\\top C - m),\\quad m_i = \\max_j B_i \\cdot C_j,\\quad
          l_i = \\sum_j P_{ij},\\qquad E = D P^\\top \\mathrm{diag}(1/l)

      S = diag(1/l) P, so D S^T = D P^T diag(1/l): dividing the C x n block of E by l instead of
      the n x N block of P saves a pass over the N x N matrix, and at most n x N of P exists.

    Parameters
    ----------
    x : ndarray (B, C, H, W), float32 or float64, finite -- the feature map A.
    weights : mapping with the PAM ``state_dict`` names: ``query_conv.weight`` (C/8, C, 1, 1),
        ``query_conv.bias`` (C/8,), ``key_conv.*`` likewise, ``value_conv.weight`` (C, C, 1, 1),
        ``value_conv.bias`` (C,), ``gamma`` (1,). Cast to x's dtype.
    chunk_size : int, optional
        Rows n of a query block. Default: as many as keep the (B, n, N) block of P within
        ``BLOCK_ELEMENTS`` elements, ``max(1, BLOCK_ELEMENTS // (B * N))``; small maps are one block.
    return_attention : bool
        Also return S (B, N, N). Not available with ``chunk_size`` (S is never whole then).
    return_intermediates : bool
        Also return a dict of the named intermediates ``B``, ``C``, ``D``, ``energy``, ``S``,
        ``E`` (flattened to (B, ·, N) as computed). Not available with ``chunk_size``.

    Returns
    -------
    out : ndarray (B, C, H, W), x's dtype; then S and/or the intermediates if asked for.
    """
    where = "position_attention"
    nb, C, H, W = check_features(x, where)
    # C' (the query/key width) is C // 8 in DANet; take it from the weights so other reductions work.
    q = weights.get("query_conv.weight") if hasattr(weights, "get") else None
    Cr = int(np.shape(q)[0]) if q is not None and np.ndim(q) == 4 else max(C // 8, 1)
    check_weights(weights, pam_weight_shapes(C, Cr), where=f"{where} weights")
    explicit = return_attention or return_intermediates
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"{where}: chunk_size must be a positive integer or None, got {chunk_size!r}")
        if explicit:
            raise ValueError(f"{where}: return_attention/return_intermediates need the whole N x N "
                             "matrix; call without chunk_size")
    gamma = _gamma(weights, where, x.dtype)
    N = H * W

    A = x.reshape(nb, C, N)                                                      # (B, C, N)
    Bq = _conv1x1(A, weights["query_conv.weight"], weights["query_conv.bias"])   # (B, C', N)  paper's B
    Ck = _conv1x1(A, weights["key_conv.weight"], weights["key_conv.bias"])       # (B, C', N)  paper's C
    Dv = _conv1x1(A, weights["value_conv.weight"], weights["value_conv.bias"])   # (B, C, N)   paper's D
    BqT = Bq.transpose(0, 2, 1)                                                  # (B, N, C')

    if explicit:
        energy = BqT @ Ck                                  # (B, N, N)  energy_ij = B_i . C_j
        # rows sum to 1; in place unless the caller wants to see the energy too
        S = softmax(energy, axis=-1, out=None if return_intermediates else energy)  # (B, N, N)
        E = Dv @ S.transpose(0, 2, 1)                      # (B, C, N)  E_i = sum_j s_ij D_j
    else:
        n = int(chunk_size or max(1, BLOCK_ELEMENTS // (nb * N)))
        E = np.empty_like(Dv)                              # (B, C, N)
        for i0 in range(0, N, n):
            E[:, :, i0:i0 + n] = _pam_block(BqT[:, i0:i0 + n], Ck, Dv)  # (B, C, n)

    out = (gamma * E + A).reshape(nb, C, H, W)             # (B, C, H, W)
    extra = []
    if return_attention:
        extra.append(S)
    if return_intermediates:
        extra.append({"B": Bq, "C": Ck, "D": Dv, "energy": energy, "S": S, "E": E})
    return (out, *extra) if extra else out


def _pam_block(BqT_blk: np.ndarray, Ck: np.ndarray, Dv: np.ndarray) -> np.ndarray:
    """Columns of E for one block of n query positions, normalised after the product.

    .. math:: P = \\exp(B_{blk}^\\top C - m),\\quad l = P\\,\\mathbf{1},\\quad
              E_{blk} = D P^\\top \\mathrm{diag}(1/l)

    Each row of P is complete in the block (it spans all N keys), so m and l are the softmax's own
    row maximum and denominator.

    Parameters
    ----------
    BqT_blk : ndarray (B, n, C') -- B^T for the block's query positions.
    Ck : ndarray (B, C', N) -- the keys C.
    Dv : ndarray (B, C, N) -- the values D.

    Returns
    -------
    E_blk : ndarray (B, C, n).
    """
    P = BqT_blk @ Ck                                   # (B, n, N)  energy rows of the block
    P -= P.max(axis=-1, keepdims=True)                 # (B, n, N)  minus m: every exponent <= 0
    np.exp(P, out=P)                                   # (B, n, N)  P = exp(B^T C - m), in place
    l = P.sum(axis=-1)                                 # (B, n)     softmax denominators
    E_blk = Dv @ P.transpose(0, 2, 1)                  # (B, C, n)  unnormalised
    E_blk /= l[:, None, :]                             # (B, C, n)  columns divided by l
    return E_blk


CAM_VARIANTS = ("official", "paper")


def channel_attention(x, weights, *, variant="official", return_attention=False,
                      return_intermediates=False):
    """Channel Attention Module (paper Sec. 3.3, eqs. 3-4; official ``CAM_Module``).

    .. math::
        X_{\\text{energy}} = A A^\\top \\in \\mathbb{R}^{C\\times C} \\\\
        \\text{paper:}\\quad x_{ji} = \\mathrm{softmax}_{\\text{rows}}(A A^\\top) \\\\
        \\text{official:}\\quad x = \\mathrm{softmax}_{\\text{rows}}(\\mathrm{rowmax}(AA^\\top) - AA^\\top)
            = \\mathrm{softmax}_{\\text{rows}}(-AA^\\top) \\\\
        Y = x A,\\qquad \\text{out} = \\beta Y + A

    There are no convolutions. The official code subtracts the energy from its row maximum before
    the softmax; softmax is invariant to a per-row constant, so that equals softmax(-A A^T): each
    channel puts most weight on the channels *least* similar to it, the opposite of the paper's
    equation. ``variant`` selects which one to compute; β is stored as ``gamma`` (official name).

    Parameters
    ----------
    x : ndarray (B, C, H, W), float32 or float64 -- the feature map A.
    weights : mapping with ``gamma`` (1,) -- the β of the paper.
    variant : ``"official"`` (default, the released code) or ``"paper"`` (eq. 3 as printed).
    return_attention : also return the attention x (B, C, C).
    return_intermediates : also return a dict with ``X`` (energy), ``attention`` and ``Y``.

    Returns
    -------
    out : ndarray (B, C, H, W), x's dtype; then the attention and/or intermediates if asked for.
    """
    where = "channel_attention"
    nb, C, H, W = check_features(x, where)
    if variant not in CAM_VARIANTS:
        raise ValueError(f"{where}: variant must be one of {CAM_VARIANTS}, got {variant!r}")
    check_weights(weights, {"gamma": (1,)}, where=f"{where} weights")
    beta = _gamma(weights, where, x.dtype)

    A = x.reshape(nb, C, H * W)                            # (B, C, N)
    X = A @ A.transpose(0, 2, 1)                           # (B, C, C)  X_ij = A_i . A_j
    if variant == "official":
        X_new = X.max(axis=-1, keepdims=True) - X          # (B, C, C)  rowmax(X) - X
        attention = softmax(X_new, axis=-1)                # (B, C, C)  = softmax(-X)
    else:
        attention = softmax(X, axis=-1)                    # (B, C, C)
    Y = attention @ A                                      # (B, C, N)  Y_j = sum_i x_ji A_i

    out = (beta * Y + A).reshape(nb, C, H, W)              # (B, C, H, W)
    extra = []
    if return_attention:
        extra.append(attention)
    if return_intermediates:
        extra.append({"X": X, "attention": attention, "Y": Y})
    return (out, *extra) if extra else out
