"""The label autoencoder's typed config: UViM's stage I (Kolesnikov et al., NeurIPS 2022) as GIVT trains it (GIVT
§4.2, App. C.3), with a Gaussian ("vae", GIVT) or a vector-quantised ("vq", UViM's original) bottleneck.

    cfg = LabelTokenizerConfig(task="panoptic", image_size=32, patch_size=4, width=128, code_len=16, num_classes=5)
    cfg.grid_size, cfg.code_side, cfg.groups      # 8, 4, {"semantics": 5, "instances": 16}

The defaults are google-research/big_vision big_vision/configs/proj/givt/vae_coco_panoptic.py (512 px, patch 16,
width 768, MLP 3072, 12 heads, 6 encoder and 12 decoder layers, code_len 256 with `bottleneck_resize`, d = 32,
beta = 2.5e-4, 133 + 1 classes, 100 instances); vae_nyu_depth.py differs in d = 16, beta = 2e-4 and one "depth" group
of 256 bins over [1e-3, 10] m. num_classes 0 means "take it from the shards' categories" (`vltk tokenize label` fills
it in before the model is built).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from vltk.config import require_range
from vltk.imagetok.config import QuantizerConfig
from vltk.models.layers import TransformerConfig

TASKS = ("panoptic", "depth")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelTokenizerConfig:
    task: Literal["panoptic", "depth"] = "panoptic"
    bottleneck: Literal["vae", "vq"] = "vae"
    image_size: int = 512
    patch_size: int = 16
    width: int = 768
    enc_depth: int = 6
    dec_depth: int = 12
    heads: int = 12
    mlp_width: int = 3072
    code_len: int = 256  # latent tokens, a square: the bottleneck resizes the patch grid to sqrt(code_len)^2
    codeword_dim: int = 32  # d: panoptic 32, depth 16
    beta: float = 2.5e-4  # KL weight (vae): panoptic 2.5e-4, depth 2e-4
    num_classes: int = 0  # semantic classes including void 0 (COCO: 133 + 1); 0 = from the data's categories
    max_instances: int = 100  # instance ids 0..max_instances-1 (0 = void)
    depth_bins: int = 256
    min_depth: float = 1e-3  # metres
    max_depth: float = 10.0
    dropout: float = 0.0
    # The VQ bottleneck (UViM's VQ-VAE): vltk's quantizer; code_dim is codeword_dim.
    codebook_size: int = 4096
    vq_beta: float = 0.25  # commitment weight; with the EMA codebook the loss is beta * commitment alone
    vq_ema: bool = True  # UViM (proj/uvim/vit.py) keeps its dictionary by a moving average, momentum 0.995
    vq_dead_code_threshold: float = 0.0  # restart codes used less than this per batch (UViM restarts unused codes)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.bottleneck not in ("vae", "vq"):
            raise ValueError(f"bottleneck must be 'vae' or 'vq', got {self.bottleneck!r}")
        require_range(self, "image_size", "patch_size", "width", "enc_depth", "dec_depth", "heads", "mlp_width",
                      "code_len", "codeword_dim", "depth_bins")
        require_range(self, "max_instances", "codebook_size", low=2)
        require_range(self, "num_classes", "beta", "vq_beta", "vq_dead_code_threshold", low=0)
        if self.num_classes == 1:
            raise ValueError("num_classes counts void too: 0 (from the data) or >= 2")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if math.isqrt(self.code_len) ** 2 != self.code_len:
            raise ValueError(f"code_len must be a square (the latent is a sqrt x sqrt grid), got {self.code_len}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def trunk(self, depth: int) -> TransformerConfig:
        """The encoder's (enc_depth) or the decoder's (dec_depth) blocks: big_vision's vit.Encoder (pre-LN, tanh GELU,
        Flax's LayerNorm eps 1e-6)."""
        return TransformerConfig(width=self.width, depth=depth, heads=self.heads, mlp_width=self.mlp_width,
                                 gelu="tanh", dropout=self.dropout, attn_dropout=0.0, norm_eps=1e-6)

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def code_side(self) -> int:
        """Latent tokens per side."""
        return math.isqrt(self.code_len)

    @property
    def groups(self) -> dict[str, int]:
        """The label channels in order, each with its number of one-hot classes (UViM's `inout_specs`)."""
        if self.task == "depth":
            return {"depth": self.depth_bins}
        return {"semantics": self.num_classes, "instances": self.max_instances}

    @property
    def quantizer(self) -> QuantizerConfig:
        return QuantizerConfig(codebook_size=self.codebook_size, code_dim=self.codeword_dim, beta=self.vq_beta,
                               ema=self.vq_ema, ema_decay=0.995, dead_code_threshold=self.vq_dead_code_threshold)
