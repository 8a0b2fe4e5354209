"""The VQ-GAN tokenizer: encoder -> quant_conv -> quantizer -> post_quant_conv -> decoder (taming/models/vqgan.py).

    model = VQGAN(ImageTokenizerConfig(kind="vqgan", image_size=32, encoder=CNNConfig(channels=64,
                  channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=()),
                  quantizer=QuantizerConfig(codebook_size=512, code_dim=8, l2_norm=True)))
    codes = model.encode(images)     # (B, 3, 32, 32) in [-1, 1] -> (B, 8, 8) int64
    recon = model.decode(codes)      # (B, 3, 32, 32)

quant_conv and post_quant_conv are the 1x1 projections between the CNN's z_channels and the codes' code_dim, so a
small code_dim with l2_norm gives factorised codes (ViT-VQGAN / LlamaGen) without extra layers.
"""

from __future__ import annotations

import torch
from torch import nn

from vltk.imagetok.cnn import Decoder, Encoder, TokenizerOutput
from vltk.imagetok.config import ImageTokenizerConfig
from vltk.imagetok.quantizers import VectorQuantizer, codebook_usage, perplexity


class VQGAN(nn.Module):
    def __init__(self, cfg: ImageTokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cnn, code_dim = cfg.encoder, cfg.quantizer.code_dim
        self.encoder = Encoder(cnn, image_size=cfg.image_size, out_channels=cnn.z_channels)
        self.quant_conv = nn.Conv2d(cnn.z_channels, code_dim, 1)
        self.quantizer = VectorQuantizer(cfg.quantizer)
        self.post_quant_conv = nn.Conv2d(code_dim, cnn.z_channels, 1)
        self.decoder = Decoder(cnn, image_size=cfg.image_size, in_channels=cnn.z_channels)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w) code ids."""
        return self.quantizer.encode(self.quant_conv(self.encoder(x)))

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, code_dim, h, w) quantised vectors -> (B, 3, H, W)."""
        return self.decoder(self.post_quant_conv(z_q))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code ids -> (B, 3, H, W)."""
        return self.decode_latents(self.quantizer.lookup(codes))

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        q = self.quantizer(self.quant_conv(self.encoder(x)))
        return TokenizerOutput(recon=self.decode_latents(q.z_q), loss_terms={"vq": q.loss}, stats=q.stats)

    def codebook_usage(self, codes: torch.Tensor) -> float:
        return codebook_usage(codes, self.cfg.quantizer.codebook_size)

    def perplexity(self, codes: torch.Tensor) -> float:
        return perplexity(codes, self.cfg.quantizer.codebook_size)
