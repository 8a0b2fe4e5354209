"""The taming-style convolutional encoder and decoder shared by the VQ-GAN and the beta-VAE (taming's model.py).

    enc = Encoder(CNNConfig(channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=()),
                  image_size=32, out_channels=64)
    enc(torch.randn(8, 3, 32, 32)).shape     # (8, 64, 8, 8)

Encoder: conv_in, then per level `num_res_blocks` ResnetBlocks (each followed by attention when the level's side is in
`attn_resolutions`) and, between levels, a stride-2 downsample; then the middle (Res, Attn, Res), GroupNorm, swish and
conv_out. The decoder mirrors it with `num_res_blocks + 1` blocks per level and nearest x2 upsampling. Module names
follow taming's, so a released checkpoint maps with the short rename table in `vltk.imagetok.taming`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vltk.imagetok.config import CNNConfig


@dataclasses.dataclass
class TokenizerOutput:
    """What both tokenizers' forward returns."""

    recon: torch.Tensor  # (B, 3, H, W)
    loss_terms: dict[str, torch.Tensor]  # weighted scalars the trainer adds to its loss ("vq" or "kl")
    stats: dict[str, float]  # for logging only


def group_norm(channels: int) -> nn.GroupNorm:
    # taming's Normalize is GroupNorm(32) (its widths are >= 128). Narrow demo models use groups of about 8 channels:
    # one channel per group would be instance norm, which erases each image's per-channel means (its colours).
    groups = 32 if channels >= 128 and channels % 32 == 0 else math.gcd(channels, max(1, channels // 8))
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # A 1x1 projection of the *input* when the width changes (taming's nin_shortcut; MaskGIT's acts on the output).
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, 1x1 projections, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))  # (B,1,HW,C)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, as taming computes it
        return x + self.proj(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming pads right/bottom only: (H, W) -> (H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Middle(nn.Module):
    def __init__(self, channels: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """The blocks of one resolution, each followed by attention when `attention`; then a resample, if any."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, dropout: float, attention: bool,
                 resample: Literal["down", "up"] | None) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(i, o, dropout) for i, o in zip(widths, widths[1:]))
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(num_blocks) if attention)
        self.resample = resample
        if resample == "down":  # attribute names as taming's, for the checkpoint keys
            self.downsample = Downsample(out_channels)
        elif resample == "up":
            self.upsample = Upsample(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        if self.resample is None:
            return x
        return self.downsample(x) if self.resample == "down" else self.upsample(x)


class Encoder(nn.Module):
    def __init__(self, cfg: CNNConfig, *, image_size: int, out_channels: int, in_channels: int = 3) -> None:
        super().__init__()
        n = len(cfg.channel_mult)
        widths = [cfg.channels * m for m in (1, *cfg.channel_mult)]  # widths[i] -> widths[i + 1] at level i
        self.conv_in = nn.Conv2d(in_channels, cfg.channels, 3, padding=1)
        self.down = nn.ModuleList(
            Level(widths[i], widths[i + 1], cfg.num_res_blocks, cfg.dropout,
                  attention=image_size // 2**i in cfg.attn_resolutions,
                  resample="down" if i < n - 1 else None)
            for i in range(n)
        )
        self.mid = Middle(widths[-1], cfg.dropout, attention=image_size // 2 ** (n - 1) in cfg.attn_resolutions)
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, out, H/f, W/f)
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: CNNConfig, *, image_size: int, in_channels: int, out_channels: int = 3) -> None:
        super().__init__()
        n = len(cfg.channel_mult)
        widths = [cfg.channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(in_channels, widths[-1], 3, padding=1)
        self.mid = Middle(widths[-1], cfg.dropout, attention=image_size // 2 ** (n - 1) in cfg.attn_resolutions)
        # self.up[i] works at the side of encoder level i; it runs from the last level to the first (taming's order).
        inputs = [widths[min(i + 1, n - 1)] for i in range(n)]
        self.up = nn.ModuleList(
            Level(inputs[i], widths[i], cfg.num_res_blocks + 1, cfg.dropout,
                  attention=image_size // 2**i in cfg.attn_resolutions,
                  resample="up" if i > 0 else None)
            for i in range(n)
        )
        self.norm_out = group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, in, h, w) -> (B, 3, h*f, w*f)
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))
