"""A plain ViT image encoder: the image side of GIVT's UViM decoders (GIVT §4.2, App. C.3; UViM, Kolesnikov et al.
NeurIPS 2022), which cross-attend to its patch features.

    cfg = ViTConfig(image_size=512, patch_size=16, width=1024, depth=24, heads=16, mlp_width=4096)   # ViT-L/16
    vit = ViT(cfg)
    features = vit(images)             # images (B, 3, 512, 512) in [-1, 1] -> (B, 1024, 1024): one row per patch

It is big_vision's `Model.encode` of givt.py (a VALID conv with kernel = stride = patch, flattened row-major, plus a
learned position table, then `vit.Encoder`: pre-LN blocks and a final LayerNorm 'encoder_norm'), without a class
token or head: the decoder reads every patch. The trunk is vltk's shared pre-LN transformer with biases, an exact GELU
and LayerNorm eps 1e-6, timm's `VisionTransformer` formulas, because the paper's ViT-L/16 is loaded from a timm-format
state dict (`vltk.models.vit_weights`). big_vision's own ViT uses the tanh GELU: a checkpoint trained there and
converted sees the exact one (the two differ by < 1e-3 per activation).

Init (for training from scratch; the paper starts from pre-trained weights): the trunk N(0, 0.02) (vltk's
`init_weights`), the patch conv LeCun-normal with a zero bias (Flax's Conv), positions N(0, 1/sqrt(width))
(big_vision's learned posemb).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from vltk.models.layers import Transformer, TransformerConfig, init_weights

NORM_EPS = 1e-6  # timm's and Flax's LayerNorm epsilon


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTConfig:
    image_size: int = 224  # square inputs of image_size x image_size pixels
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_width: int = 0  # 0 = 4 * width
    dropout: float = 0.0  # residual dropout in the blocks (big_vision's enc_dropout_rate; UViM: 0)

    def __post_init__(self) -> None:
        if min(self.image_size, self.patch_size) < 1:
            raise ValueError("image_size and patch_size must be >= 1")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        self.trunk  # validates width / depth / heads / MLP width / dropout

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def patches(self) -> int:
        return self.grid ** 2

    @property
    def trunk(self) -> TransformerConfig:
        return TransformerConfig(width=self.width, depth=self.depth, heads=self.heads, mlp_width=self.mlp_width,
                                 dropout=self.dropout, attn_dropout=0.0, norm_eps=NORM_EPS)


class TokenEncoder(nn.Module):
    """big_vision's `vit.Encoder` with its learned position table: tokens + positions -> pre-LN blocks -> LayerNorm.
    The ViT below runs it over image patches; UViM's label autoencoder (`vltk.labeltok`) over label patches and over
    its decoder's tokens."""

    def __init__(self, trunk: TransformerConfig, length: int):
        super().__init__()
        self.positions = nn.Parameter(torch.empty(length, trunk.width))
        self.transformer = Transformer(trunk)
        self.norm = nn.LayerNorm(trunk.width, eps=trunk.norm_eps)
        self.transformer.apply(init_weights)
        nn.init.normal_(self.positions, std=1 / math.sqrt(trunk.width))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, length, width) -> (B, length, width)."""
        return self.norm(self.transformer(tokens + self.positions))


class ViT(TokenEncoder):
    def __init__(self, cfg: ViTConfig):
        super().__init__(cfg.trunk, cfg.patches)
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        nn.init.normal_(self.patch_embed.weight, std=1 / math.sqrt(3 * cfg.patch_size ** 2))
        nn.init.zeros_(self.patch_embed.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [-1, 1], H = W = image_size -> (B, P, width) patch features, P = grid^2 row-major."""
        cfg = self.cfg
        if images.shape[1:] != (3, cfg.image_size, cfg.image_size):
            raise ValueError(f"expected images (B, 3, {cfg.image_size}, {cfg.image_size}), got {tuple(images.shape)}")
        return self.encode(self.patch_embed(images).flatten(2).transpose(1, 2))  # (B, P, width)
