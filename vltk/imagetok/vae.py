"""GIVT's beta-VAE tokenizer: the same CNN with a Gaussian posterior of d channels per position (GIVT §3.1).

    model = BetaVAE(ImageTokenizerConfig(kind="vae", image_size=32, encoder=CNNConfig(channels=64,
                    channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=()), vae=VAEConfig(latent_channels=16)))
    mean, logvar = model.encode(images)                     # each (B, 16, 8, 8)
    z = model.sample(mean, logvar, generator)               # mean + exp(logvar / 2) * eps
    recon = model.decode(z)                                 # (B, 3, 32, 32), clipped to [-1, 1] in eval mode

forward samples z in training mode (GIVT trains on samples, GIVT §4.1) and uses the mean in eval mode, so evaluation is
deterministic. The KL term is -1/2 sum(1 + logvar - mean^2 - exp(logvar)) summed over each image's latent, averaged
over the batch, times `kl_weight` (beta). As in the VQ-GAN, 1x1 convs sit between the CNN's z_channels and the latent:
quant_conv makes the 2d channels of (mean, logvar), post_quant_conv widens z back. The decoder's output is clipped
only in eval mode, so gradients flow in training.
"""

from __future__ import annotations

import torch
from torch import nn

from vltk.imagetok.cnn import Decoder, Encoder, TokenizerOutput
from vltk.imagetok.config import ImageTokenizerConfig


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over all but the batch dimension, averaged over the batch."""
    kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp())
    return kl.flatten(1).sum(1).mean()


class BetaVAE(nn.Module):
    def __init__(self, cfg: ImageTokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cnn, d = cfg.encoder, cfg.vae.latent_channels
        self.encoder = Encoder(cnn, image_size=cfg.image_size, out_channels=cnn.z_channels)
        self.quant_conv = nn.Conv2d(cnn.z_channels, 2 * d, 1)  # -> (mean, logvar)
        self.post_quant_conv = nn.Conv2d(d, cnn.z_channels, 1)
        self.decoder = Decoder(cnn, image_size=cfg.image_size, in_channels=cnn.z_channels)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> mean, logvar, each (B, d, h, w); logvar clipped to [logvar_min, logvar_max]."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(self.cfg.vae.logvar_min, self.cfg.vae.logvar_max)

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The reparametrised sample z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) from `generator`."""
        device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=device).to(mean)
        return mean + (0.5 * logvar).exp() * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) -> (B, 3, H, W)."""
        x = self.decoder(self.post_quant_conv(z))
        return x if self.training else x.clamp(-1, 1)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        mean, logvar = self.encode(x)
        z = self.sample(mean, logvar) if self.training else mean
        kl = gaussian_kl(mean.float(), logvar.float())
        stats = {"kl_per_image": kl.item(), "logvar": logvar.mean().item(), "mean_abs": mean.abs().mean().item()}
        return TokenizerOutput(recon=self.decode(z), loss_terms={"kl": self.cfg.vae.kl_weight * kl}, stats=stats)
