"""Position and Channel Attention Modules in PyTorch (paper Secs. 3.2-3.3; official ``da_att.py``).

The attribute names (``query_conv``, ``key_conv``, ``value_conv``, ``gamma``) are the official
ones, so the authors' checkpoints load by name. ``refimpl.attention`` is the NumPy twin of this
file; ``forward_with_intermediates`` returns the same named intermediates it does.
"""

from __future__ import annotations

import torch
from torch import nn

CAM_VARIANTS = ("official", "paper")


class PositionAttention(nn.Module):
    """PAM: out = γ · D·softmax(BᵀC)ᵀ + A, with B, C, D 1×1 convolutions of A (γ starts at 0).

    Parameters
    ----------
    in_channels : C, the channels of A.
    reduction : C' = C // reduction channels for the query B and key C (8 in DANet).
    chunk_size : if set, query rows are processed in blocks of this many positions, so that at
        most chunk_size × N of the N×N attention exists at once (same result, bounded memory).
    """

    def __init__(self, in_channels: int, reduction: int = 8, chunk_size: int | None = None):
        super().__init__()
        if in_channels < reduction or in_channels % reduction:
            raise ValueError(f"PositionAttention: in_channels={in_channels} must be a positive "
                             f"multiple of reduction={reduction}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"PositionAttention: chunk_size must be >= 1 or None, got {chunk_size}")
        self.chunk_size = chunk_size
        self.query_conv = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward_with_intermediates(self, A: torch.Tensor):
        """Explicit computation; returns (out, {B, C, D, energy, S, E}) as ``refimpl`` names them."""
        nb, C, H, W = A.shape
        N = H * W
        Bq = self.query_conv(A).view(nb, -1, N)              # (B, C', N)
        Ck = self.key_conv(A).view(nb, -1, N)                # (B, C', N)
        Dv = self.value_conv(A).view(nb, -1, N)              # (B, C, N)
        energy = torch.bmm(Bq.permute(0, 2, 1), Ck)          # (B, N, N)
        S = torch.softmax(energy, dim=-1)                    # (B, N, N)
        E = torch.bmm(Dv, S.permute(0, 2, 1))                # (B, C, N)
        out = self.gamma * E.view(nb, C, H, W) + A           # (B, C, H, W)
        return out, {"B": Bq, "C": Ck, "D": Dv, "energy": energy, "S": S, "E": E}

    def attention(self, A: torch.Tensor) -> torch.Tensor:
        """The attention matrix S (B, N, N): row i is where position i looks."""
        return self.forward_with_intermediates(A)[1]["S"]

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        if self.chunk_size is None:
            return self.forward_with_intermediates(A)[0]
        nb, C, H, W = A.shape
        N = H * W
        BqT = self.query_conv(A).view(nb, -1, N).permute(0, 2, 1)  # (B, N, C')
        Ck = self.key_conv(A).view(nb, -1, N)                      # (B, C', N)
        Dv = self.value_conv(A).view(nb, -1, N)                    # (B, C, N)
        E = torch.cat([torch.bmm(Dv, torch.softmax(torch.bmm(BqT[:, i:i + self.chunk_size], Ck), dim=-1)
                                 .permute(0, 2, 1))                # (B, C, n) per block
                       for i in range(0, N, self.chunk_size)], dim=2)  # (B, C, N)
        return self.gamma * E.view(nb, C, H, W) + A                # (B, C, H, W)


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
            attention = torch.softmax(X_new, dim=-1)             # (B, C, C)
        else:
            attention = torch.softmax(X, dim=-1)                 # (B, C, C)
        Y = torch.bmm(attention, A_flat)                         # (B, C, N)
        out = self.gamma * Y.view(nb, C, H, W) + A               # (B, C, H, W)
        return out, {"X": X, "attention": attention, "Y": Y}

    def attention(self, A: torch.Tensor) -> torch.Tensor:
        """The channel attention matrix (B, C, C)."""
        return self.forward_with_intermediates(A)[1]["attention"]

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        return self.forward_with_intermediates(A)[0]
