"""The PatchGAN discriminator of taming / pix2pix (`NLayerDiscriminator`, taming/modules/discriminator/model.py).

    disc = PatchDiscriminator(ndf=64, n_layers=3)     # norm="batch" as taming; "group" for small or sharded batches
    disc(torch.randn(8, 3, 256, 256)).shape           # (8, 1, 30, 30): one real/fake logit per overlapping patch

4x4 convs: the first `n_layers` with stride 2 (widths ndf * 1, 2, 4, 8, 8, ...), one more with stride 1, then a
stride-1 conv to one channel; LeakyReLU 0.2 after every conv but the last, a norm after every conv but the first and
the last. Weights are drawn from N(0, 0.02), norm scales from N(1, 0.02).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn


def _norm(kind: Literal["batch", "group"], channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(math.gcd(32, channels), channels)


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3,
                 norm: Literal["batch", "group"] = "batch") -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        widths = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        bias = norm != "batch"  # a bias before BatchNorm is redundant
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1, bias=bias),
                       _norm(norm, widths[i]), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, h, w) logits
        return self.main(x)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
