"""GIVT's invertible adapter ("+A"): a stack of iRevNet blocks on the VAE's latent grid (GIVT §3.3, App. B).

    adapter = Adapter(AdapterConfig(), channels=16)     # 8 blocks, bottleneck 4d = 64: 111,728 parameters
    y = adapter(z)                                      # z (B, 16, h, w) -> y (B, 16, h, w); GIVT is fit to y
    z = adapter.inverse(y)                              # sampling: GIVT sample -> inverse -> VAE decoder

Each block is an additive coupling on the two channel halves, (x1, x2) -> (x2, x1 + F(x2)), so its Jacobian
determinant is 1: GIVT's NLL of adapter(z) needs no log-det term, and the adapter trains jointly with GIVT on that loss.
F = [GN -> ReLU] (not in the first block) -> conv3x3 to bottleneck/2 -> GN -> ReLU -> conv3x3 -> dropout -> GN -> ReLU
-> conv3x3 to d/2, convolutions without bias, GroupNorm with min(32, d/2) groups and Flax's eps 1e-6 (big_vision's
`adaptor.py`, after iRevNet with BatchNorm replaced by GroupNorm and no subsampling). Dropout other than 0 makes the
training-mode forward non-invertible; the paper uses 0.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vltk.config import require_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdapterConfig:
    blocks: int = 8
    bottleneck: int = 0  # F's hidden channels over both halves; 0 = 4 x the latent channels (the 256 px config)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require_range(self, "blocks")
        if self.bottleneck < 0 or not 0 <= self.dropout < 1:
            raise ValueError("bottleneck must be >= 0 and dropout in [0, 1)")


class Coupling(nn.Module):
    """F of one block: (B, d/2, h, w) -> (B, d/2, h, w)."""

    def __init__(self, half: int, hidden: int, groups: int, first: bool, dropout: float):
        super().__init__()
        conv = lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1, bias=False)  # noqa: E731
        norm = lambda c: nn.GroupNorm(groups, c, eps=1e-6)  # noqa: E731
        pre = [] if first else [norm(half), nn.ReLU()]  # the first block sees the raw latent
        self.net = nn.Sequential(*pre, conv(half, hidden), norm(hidden), nn.ReLU(), conv(hidden, hidden),
                                 nn.Dropout(dropout), norm(hidden), nn.ReLU(), conv(hidden, half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Adapter(nn.Module):
    def __init__(self, cfg: AdapterConfig, channels: int):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"the adapter splits the channels in halves: {channels} is not even")
        half, hidden = channels // 2, (cfg.bottleneck or 4 * channels) // 2
        groups = min(32, half)
        if hidden % groups:
            raise ValueError(f"bottleneck/2 = {hidden} is not divisible by the {groups} GroupNorm groups")
        self.couplings = nn.ModuleList(Coupling(half, hidden, groups, i == 0, cfg.dropout) for i in range(cfg.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) latents -> (B, d, h, w) adapted latents."""
        x1, x2 = x.chunk(2, dim=1)
        for f in self.couplings:
            x1, x2 = x2, x1 + f(x2)
        return torch.cat([x1, x2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The exact inverse of `forward`: each block's (a, b) -> (b - F(a), a), the blocks in reverse."""
        a, b = y.chunk(2, dim=1)
        for f in reversed(self.couplings):
            a, b = b - f(a), a
        return torch.cat([a, b], dim=1)
