"""Image tokenizers: the VQ-GAN (discrete codes) and GIVT's beta-VAE (continuous latents).

    model = build_image_tokenizer(ImageTokenizerConfig(kind="vae", image_size=32))
"""

from __future__ import annotations

from torch import nn

from vltk.imagetok.cnn import TokenizerOutput
from vltk.imagetok.config import CNNConfig, ImageTokenizerConfig, QuantizerConfig, VAEConfig
from vltk.imagetok.vae import BetaVAE
from vltk.imagetok.vqgan import VQGAN

__all__ = ["BetaVAE", "CNNConfig", "ImageTokenizerConfig", "QuantizerConfig", "TokenizerOutput", "VAEConfig", "VQGAN",
           "build_image_tokenizer"]


def build_image_tokenizer(cfg: ImageTokenizerConfig) -> nn.Module:
    """A freshly initialised VQGAN or BetaVAE, by `cfg.kind`."""
    return VQGAN(cfg) if cfg.kind == "vqgan" else BetaVAE(cfg)
