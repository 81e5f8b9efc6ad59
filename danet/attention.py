"""Position and Channel Attention Modules in PyTorch (paper Secs. 3.2-3.3; official ``da_att.py``).

The attribute names (``query_conv``, ``key_conv``, ``value_conv``, ``gamma``) are the official
ones, so the authors' checkpoints load by name. ``refimpl.attention`` is the NumPy twin of this
file; ``forward_with_intermediates`` returns the same named intermediates it does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from refimpl.attention import CAM_VARIANTS  # noqa: F401 -- one list of variants for both implementations
PAM_IMPLS = ("explicit", "chunked", "sdpa")
DEFAULT_CHUNK_SIZE = 1024


def check_pam_args(impl: str, chunk_size: int) -> None:
    """Refuse an unknown PAM ``impl`` or a ``chunk_size`` that is not an int >= 1, naming the value."""
    if impl not in PAM_IMPLS:
        raise ValueError(f"PositionAttention: impl must be one of {PAM_IMPLS}, got {impl!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"PositionAttention: chunk_size must be an int >= 1, got {chunk_size!r}")


def _softmax_lastdim(x: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis, computed in float32 when autocast has lowered ``x`` to 16 bits.

    Outside autocast (and for float32/float64 inputs) this is exactly ``torch.softmax(x, -1)``.
    CUDA autocast already runs softmax in float32; CPU autocast would run it in bfloat16, hence the
    explicit upcast. The result stays float32; the next matmul under autocast casts it down again.
    """
    if x.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
        return torch.softmax(x.float(), dim=-1)
    return torch.softmax(x, dim=-1)


class PositionAttention(nn.Module):
    """PAM: out = γ · D·softmax(BᵀC)ᵀ + A, with B, C, D 1×1 convolutions of A (γ starts at 0).

    With A (B, C, H, W), N = H·W: B, C ∈ (C', N) and D ∈ (C, N) per image, energy BᵀC (N, N) with
    **no** 1/√C' scaling, S = softmax over each row, E = D·Sᵀ (C, N), out = γ·E + A.
    ``impl`` picks one of three computations of the same numbers (up to rounding):

    ``"explicit"`` (default)
        the official code: the whole N×N energy and S exist at once (``forward_with_intermediates``,
        what the NumPy parity tests compare).
    ``"chunked"``
        :func:`_pam_chunked`: query rows in blocks of ``chunk_size``, so at most chunk_size × N of
        S exists at once; under autograd each block is checkpointed (recomputed in backward).
    ``"sdpa"``
        :func:`_pam_sdpa`: ``scaled_dot_product_attention`` with scale 1, a fused kernel that
        never forms the N×N matrix.

    Parameters
    ----------
    in_channels : C, the channels of A.
    reduction : C' = C // reduction channels for the query B and key C (8 in DANet).
    impl : ``"explicit"``, ``"chunked"`` or ``"sdpa"``; the only switch between them. A plain
        attribute: assigning another name later changes what forward() computes.
    chunk_size : query-block size of ``"chunked"`` (default 1024), an int >= 1; the other impls
        accept and ignore it.
    """

    def __init__(self, in_channels: int, reduction: int = 8, impl: str = "explicit",
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__()
        if in_channels < reduction or in_channels % reduction:
            raise ValueError(f"PositionAttention: in_channels={in_channels} must be a positive "
                             f"multiple of reduction={reduction}")
        check_pam_args(impl, chunk_size)
        self.impl = impl
        self.chunk_size = chunk_size
        self.query_conv = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}" + (f", chunk_size={self.chunk_size}" if self.impl == "chunked" else "")

    def forward_with_intermediates(self, A: torch.Tensor):
        """Explicit computation; returns (out, {B, C, D, energy, S, E}) as ``refimpl`` names them."""
        nb, C, H, W = A.shape
        N = H * W
        Bq = self.query_conv(A).view(nb, -1, N)              # (B, C', N)
        Ck = self.key_conv(A).view(nb, -1, N)                # (B, C', N)
        Dv = self.value_conv(A).view(nb, -1, N)              # (B, C, N)
        energy = torch.bmm(Bq.permute(0, 2, 1), Ck)          # (B, N, N)
        S = _softmax_lastdim(energy)                         # (B, N, N); float32 under autocast
        E = torch.bmm(Dv, S.permute(0, 2, 1))                # (B, C, N)
        out = self.gamma * E.view(nb, C, H, W) + A           # (B, C, H, W)
        return out, {"B": Bq, "C": Ck, "D": Dv, "energy": energy, "S": S, "E": E}

    def attention(self, A: torch.Tensor) -> torch.Tensor:
        """The attention matrix S (B, N, N): row i is where position i looks."""
        return self.forward_with_intermediates(A)[1]["S"]

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        if self.impl == "explicit":
            return self.forward_with_intermediates(A)[0]
        nb, C, H, W = A.shape
        N = H * W
        Bq = self.query_conv(A).view(nb, -1, N)              # (B, C', N)
        Ck = self.key_conv(A).view(nb, -1, N)                # (B, C', N)
        Dv = self.value_conv(A).view(nb, -1, N)              # (B, C, N)
        if self.impl == "chunked":
            E = _pam_chunked(Bq, Ck, Dv, self.chunk_size)    # (B, C, N)
        elif self.impl == "sdpa":
            E = _pam_sdpa(Bq, Ck, Dv)                        # (B, C, N)
        else:
            raise ValueError(f"PositionAttention: impl must be one of {PAM_IMPLS}, got {self.impl!r}")
        return self.gamma * E.view(nb, C, H, W) + A          # (B, C, H, W)


def _pam_chunked(Bq: torch.Tensor, Ck: torch.Tensor, Dv: torch.Tensor, chunk: int) -> torch.Tensor:
    """E = D·softmax(BᵀC)ᵀ (B, C, N), ``chunk`` query rows at a time: E[:, :, i:i+n] = D·S[i:i+n]ᵀ.

    Each row of S is complete in its block (it spans all N keys), so the blocks are exact. Under
    autograd a block is checkpointed: backward keeps q, C and D, not the (B, n, N) block of S.
    """
    BqT = Bq.permute(0, 2, 1)                                     # (B, N, C')
    checkpointed = torch.is_grad_enabled() and any(t.requires_grad for t in (Bq, Ck, Dv))
    blocks = []
    for i in range(0, BqT.shape[1], chunk):
        q = BqT[:, i:i + chunk]                                   # (B, n, C')
        if checkpointed:
            blocks.append(checkpoint(_pam_block, q, Ck, Dv, use_reentrant=False))  # (B, C, n)
        else:
            blocks.append(_pam_block(q, Ck, Dv))                  # (B, C, n)
    return torch.cat(blocks, dim=2)                               # (B, C, N)


def _pam_block(q: torch.Tensor, Ck: torch.Tensor, Dv: torch.Tensor) -> torch.Tensor:
    """One query block: D·softmax(q·C)ᵀ for q (B, n, C'), C (B, C', N), D (B, C, N) → (B, C, n)."""
    S = _softmax_lastdim(torch.bmm(q, Ck))                        # (B, n, N)
    return torch.bmm(Dv, S.permute(0, 2, 1))                      # (B, C, n)


def _pam_sdpa(Bq: torch.Tensor, Ck: torch.Tensor, Dv: torch.Tensor) -> torch.Tensor:
    """E = D·softmax(BᵀC)ᵀ (B, C, N) through ``scaled_dot_product_attention(q, k, v, scale=1.0)``.

    q = Bᵀ, k = Cᵀ, v = Dᵀ. Fused kernels want q, k and v of the same head width, so D's C
    channels are split into h = C/C' "heads" of C' channels sharing the same q and k; each head's
    softmax(BᵀC)·D_hᵀ is the same attention applied to C' of D's channels, so this is the same
    equation. (The literal v (B, 1, N, C) has no fused CPU kernel: it falls back to the math path,
    which forms N×N.)
    """
    nb, Cr, N = Bq.shape
    C = Dv.shape[1]
    heads = C // Cr                                               # C = h·C' (the reduction)
    # Fused kernels need the last axis contiguous: copy the transposes (O(N·C), not O(N²)).
    q = Bq.permute(0, 2, 1).contiguous().unsqueeze(1).expand(nb, heads, N, Cr)  # (B, h, N, C'), shared
    k = Ck.permute(0, 2, 1).contiguous().unsqueeze(1).expand(nb, heads, N, Cr)  # (B, h, N, C'), shared
    v = Dv.view(nb, heads, Cr, N).transpose(2, 3).contiguous()                  # (B, h, N, C')
    if q.device.type != "cpu":
        # Off the CPU (whose flash kernel is tested here with these broadcast views), give the
        # kernels real copies: stride-0 heads have tripped CUDA's efficient kernel before
        # (pytorch/pytorch#191937). Costs 2·N·C elements, no N×N.
        q, k = q.contiguous(), k.contiguous()                                   # (B, h, N, C') each
    o = F.scaled_dot_product_attention(q, k, v, scale=1.0)                      # (B, h, N, C')
    return o.transpose(2, 3).reshape(nb, C, N)                    # (B, h, C', N) → (B, C, N)


class ChannelAttention(nn.Module):
    """CAM: out = β · softmax(f(AAᵀ))·A + A, no convolutions (β stored as ``gamma``, starts at 0).

    ``variant="official"``: f(X) = rowmax(X) − X, as the released code; by shift invariance of the
    softmax this is softmax(−X), so each channel weights the channels least similar to it.
    ``variant="paper"``: f(X) = X, equation 3 as printed.
    """

    def __init__(self, variant: str = "official"):
        super().__init__()
        if variant not in CAM_VARIANTS:
            raise ValueError(f"ChannelAttention: variant must be one of {CAM_VARIANTS}, got {variant!r}")
        self.variant = variant
        self.gamma = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"

    def forward_with_intermediates(self, A: torch.Tensor):
        """Returns (out, {X, attention, Y}) as ``refimpl`` names them."""
        nb, C, H, W = A.shape
        A_flat = A.view(nb, C, -1)                               # (B, C, N)
        X = torch.bmm(A_flat, A_flat.permute(0, 2, 1))           # (B, C, C)
        if self.variant == "official":
            X_new = X.max(dim=-1, keepdim=True)[0].expand_as(X) - X  # (B, C, C)
            attention = _softmax_lastdim(X_new)                  # (B, C, C); float32 under autocast
        else:
            attention = _softmax_lastdim(X)                      # (B, C, C); float32 under autocast
        Y = torch.bmm(attention, A_flat)                         # (B, C, N)
        out = self.gamma * Y.view(nb, C, H, W) + A               # (B, C, H, W)
        return out, {"X": X, "attention": attention, "Y": Y}

    def attention(self, A: torch.Tensor) -> torch.Tensor:
        """The channel attention matrix (B, C, C)."""
        return self.forward_with_intermediates(A)[1]["attention"]

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        return self.forward_with_intermediates(A)[0]
