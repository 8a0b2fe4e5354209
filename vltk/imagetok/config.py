"""Typed configs of the image tokenizers: the CNN, the quantizer (VQ-GAN) and the Gaussian posterior (beta-VAE).

    cfg = load_config(ImageTokenizerConfig, Path("stages/demo/tokenizer.toml"), ["encoder.channels=64"])
    cfg.downsample, cfg.grid_size          # 2**(len(channel_mult) - 1), image_size // downsample

The defaults are the released taming VQ-GAN f16 architecture (vqgan_imagenet_f16_16384) with a quantizer set up for
new training (`legacy=False`) and GIVT's beta-VAE posterior (GIVT §4.1: d = 16, beta = 5e-5; log-variance clipped to
[-30, 20] as in big_vision's givt/cnn.py).
Both `quantizer` and `vae` are always present; `kind` says which one the model uses.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from vltk.config import require_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class CNNConfig:
    """The taming encoder/decoder pair; the decoder mirrors the encoder."""

    channels: int = 128  # width of the first level
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # one level each; every level but the last halves the resolution
    num_res_blocks: int = 2  # per encoder level (the decoder has one more, as in taming)
    attn_resolutions: tuple[int, ...] = (16,)  # feature-map sides with self-attention; the middle has one when the
    # latent side is listed
    z_channels: int = 256  # encoder output / decoder input width
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require_range(self, "channels", "num_res_blocks", "z_channels", prefix="encoder.")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"encoder.channel_mult must be a non-empty list of ints >= 1, got {self.channel_mult}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"encoder.dropout must be in [0, 1), got {self.dropout}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizerConfig:
    """Straight-through VQ (taming/modules/vqvae/quantize.py) with the usual options against codebook collapse."""

    codebook_size: int = 16384
    code_dim: int = 256  # the codes' width; quant_conv projects z_channels to it (small + l2_norm = factorised codes)
    beta: float = 0.25
    legacy: bool = False  # True: beta on the codebook term, as taming's released models (a known bug, kept for parity)
    l2_norm: bool = False  # l2-normalise encoder outputs and codes, i.e. look codes up by cosine similarity
    ema: bool = False  # update the codebook by an EMA of its assigned vectors instead of the codebook loss
    ema_decay: float = 0.99  # also the decay of the usage counts behind dead-code restart
    init: Literal["uniform", "kmeans"] = "uniform"  # U(-1/K, 1/K), or k-means on the first training batch
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0  # restart codes whose EMA count of vectors per batch falls below this (0 = off)

    def __post_init__(self) -> None:
        require_range(self, "codebook_size", low=2, prefix="quantizer.")
        require_range(self, "code_dim", "kmeans_iters", prefix="quantizer.")
        require_range(self, "beta", "dead_code_threshold", low=0, prefix="quantizer.")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"quantizer.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.ema and self.legacy:
            raise ValueError("quantizer.legacy moves beta onto the codebook loss, which ema=true replaces; set one")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VAEConfig:
    """GIVT's Gaussian posterior (GIVT §3.1)."""

    latent_channels: int = 16  # d
    kl_weight: float = 5e-5  # beta
    logvar_min: float = -30.0
    logvar_max: float = 20.0

    def __post_init__(self) -> None:
        require_range(self, "latent_channels", prefix="vae.")
        require_range(self, "kl_weight", low=0, prefix="vae.")
        if not self.logvar_min < self.logvar_max:
            raise ValueError(f"vae.logvar_min must be < vae.logvar_max, got {self.logvar_min}, {self.logvar_max}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageTokenizerConfig:
    kind: Literal["vqgan", "vae"] = "vqgan"
    image_size: int = 256
    encoder: CNNConfig = dataclasses.field(default_factory=CNNConfig)
    quantizer: QuantizerConfig = dataclasses.field(default_factory=QuantizerConfig)
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.image_size % self.downsample:
            raise ValueError(f"image_size must be a positive multiple of the downsampling factor {self.downsample}, "
                             f"got {self.image_size}")
        sides = [self.image_size // 2**level for level in range(len(self.encoder.channel_mult))]
        unused = sorted(set(self.encoder.attn_resolutions) - set(sides))
        if unused:
            raise ValueError(f"encoder.attn_resolutions {unused} never occur; the feature maps are {sides} px")

    @property
    def downsample(self) -> int:
        return self.encoder.downsample

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample
