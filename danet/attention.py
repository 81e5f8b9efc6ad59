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

CAM_VARIANTS = ("official", "paper")
PAM_IMPLS = ("explicit", "chunked", "sdpa")
DEFAULT_CHUNK_SIZE = 1024


def check_pam_impl(impl: str | None, chunk_size: int | None, where: str) -> None:
    """Refuse a bad (impl, chunk_size) pair with a message that names ``where`` the values came from.

    ``impl`` is None (explicit, or chunked when ``chunk_size`` is given) or one of ``PAM_IMPLS``;
    ``chunk_size`` is None or an int >= 1 and only goes with ``impl`` None or ``"chunked"``.
    """
    if impl is not None and impl not in PAM_IMPLS:
        raise ValueError(f"{where}: PAM impl must be one of {PAM_IMPLS} or None, got {impl!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"{where}: chunk_size must be >= 1 or None, got {chunk_size!r}")
    if chunk_size is not None and impl in ("explicit", "sdpa"):
        raise ValueError(f"{where}: chunk_size={chunk_size} only applies to the 'chunked' PAM impl, "
                         f"got impl={impl!r}")


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

    With A (B, C, H, W), N = H·W: B, C ∈ (C', N) and D ∈ (C, N) per image, energy S = BᵀC (N, N)
    with **no** 1/√C' scaling, softmax over each row, E = D·softmax(S)ᵀ (C, N), out = γ·E + A.
    Three implementations compute the same numbers (up to floating-point rounding):

    ``"explicit"``
        the official code: the whole N×N energy and attention exist at once
        (``forward_with_intermediates``, what the NumPy parity tests compare).
    ``"chunked"``
        query rows in blocks of ``chunk_size`` (default 1024): at most chunk_size × N of the
        attention exists at once; under autograd each block is checkpointed (recomputed in the
        backward pass), so training memory is bounded too.
    ``"sdpa"``
        ``torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)`` with q = Bᵀ,
        k = Cᵀ, v = Dᵀ — a fused kernel that never forms the N×N matrix. Fused kernels want q, k
        and v with the same head width, so D's C channels are split into C/C' "heads" of C'
        channels that share the same q and k (q, k (B, C/C', N, C') broadcast, v (B, C/C', N, C')).
        Each head's softmax(BᵀC)·Dᵀ_h is the same attention applied to C' of D's channels, so this
        is the same equation. The literal form with v (B, 1, N, C) has no fused CPU kernel (it
        falls back to the math path, which forms N×N).

    Parameters
    ----------
    in_channels : C, the channels of A.
    reduction : C' = C // reduction channels for the query B and key C (8 in DANet).
    chunk_size : query-block size of ``"chunked"``; giving it without ``impl`` selects
        ``"chunked"`` (as before ``impl`` existed), and so does setting the ``chunk_size``
        attribute later on a module built without ``impl``. With ``impl="explicit"`` or
        ``"sdpa"`` it is refused.
    impl : ``None`` (explicit, or chunked if ``chunk_size`` is set), ``"explicit"``, ``"chunked"``
        or ``"sdpa"``. The ``impl`` attribute reads back the implementation forward() will use;
        assigning a name to it later selects that one whatever ``chunk_size`` holds.
    """

    def __init__(self, in_channels: int, reduction: int = 8, chunk_size: int | None = None,
                 impl: str | None = None):
        super().__init__()
        if in_channels < reduction or in_channels % reduction:
            raise ValueError(f"PositionAttention: in_channels={in_channels} must be a positive "
                             f"multiple of reduction={reduction}")
        check_pam_impl(impl, chunk_size, "PositionAttention")
        self.chunk_size = chunk_size
        self._impl = impl
        self.query_conv = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    @property
    def impl(self) -> str:
        """The implementation forward() uses: the one asked for, else chunked iff chunk_size is set."""
        if self._impl is not None:
            return self._impl
        return "chunked" if self.chunk_size is not None else "explicit"

    @impl.setter
    def impl(self, value: str | None) -> None:
        check_pam_impl(value, None, "PositionAttention")  # a name set later wins over chunk_size
        self._impl = value

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
        impl = self.impl
        if impl == "explicit":
            return self.forward_with_intermediates(A)[0]
        if impl == "chunked":
            return self._forward_chunked(A, self.chunk_size or DEFAULT_CHUNK_SIZE)
        return self._forward_sdpa(A)

    def _forward_chunked(self, A: torch.Tensor, chunk: int) -> torch.Tensor:
        """out = γ·E + A with E[:, :, i:i+n] = D·softmax(Bᵀ[i:i+n]·C)ᵀ, one query block at a time."""
        nb, C, H, W = A.shape
        N = H * W
        BqT = self.query_conv(A).view(nb, -1, N).permute(0, 2, 1)  # (B, N, C')
        Ck = self.key_conv(A).view(nb, -1, N)                      # (B, C', N)
        Dv = self.value_conv(A).view(nb, -1, N)                    # (B, C, N)
        checkpointed = torch.is_grad_enabled() and any(t.requires_grad for t in (BqT, Ck, Dv))
        blocks = []
        for i in range(0, N, chunk):
            q = BqT[:, i:i + chunk]                                # (B, n, C')
            if checkpointed:   # keep only q, Ck, Dv for backward, not the (B, n, N) attention
                blocks.append(checkpoint(_pam_block, q, Ck, Dv, use_reentrant=False))
            else:
                blocks.append(_pam_block(q, Ck, Dv))               # (B, C, n)
        E = torch.cat(blocks, dim=2)                               # (B, C, N)
        return self.gamma * E.view(nb, C, H, W) + A                # (B, C, H, W)

    def _forward_sdpa(self, A: torch.Tensor) -> torch.Tensor:
        """out = γ·(softmax(BᵀC)·Dᵀ)ᵀ + A through scaled_dot_product_attention(scale=1.0)."""
        nb, C, H, W = A.shape
        N = H * W
        Bq = self.query_conv(A).view(nb, -1, N)                    # (B, C', N)
        Cr = Bq.shape[1]
        heads = C // Cr                                            # C = heads·C' (reduction)
        # Fused kernels need the last axis contiguous: copy the transposes (O(N·C), not O(N²)).
        q = Bq.permute(0, 2, 1).contiguous().unsqueeze(1).expand(nb, heads, N, Cr)  # (B, h, N, C'), shared
        k = (self.key_conv(A).view(nb, Cr, N).permute(0, 2, 1).contiguous()
             .unsqueeze(1).expand(nb, heads, N, Cr))                     # (B, h, N, C'), shared
        v = (self.value_conv(A).view(nb, heads, Cr, N)                   # (B, h, C', N): D's rows h·C'…
             .transpose(2, 3).contiguous())                              # (B, h, N, C')
        if q.device.type != "cpu":
            # Off the CPU (whose flash kernel is tested here with these broadcast views), give the
            # kernels real copies: stride-0 heads have tripped CUDA's efficient kernel before
            # (pytorch/pytorch#191937). Costs 2·N·C elements, no N×N.
            q, k = q.contiguous(), k.contiguous()                        # (B, h, N, C') each
        o = F.scaled_dot_product_attention(q, k, v, scale=1.0)          # (B, h, N, C')
        E = o.transpose(2, 3).reshape(nb, C, N)                    # (B, h, C', N) → (B, C, N)
        return self.gamma * E.view(nb, C, H, W) + A                # (B, C, H, W)


def _pam_block(q: torch.Tensor, Ck: torch.Tensor, Dv: torch.Tensor) -> torch.Tensor:
    """One query block: D·softmax(q·C)ᵀ for q (B, n, C'), C (B, C', N), D (B, C, N) → (B, C, n)."""
    S = _softmax_lastdim(torch.bmm(q, Ck))                        # (B, n, N)
    return torch.bmm(Dv, S.permute(0, 2, 1))                      # (B, C, n)


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
