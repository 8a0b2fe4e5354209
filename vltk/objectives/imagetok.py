"""The image tokenizer's training task: one micro-batch of VQ-GAN / beta-VAE training, as taming's
VQLPIPSWithDiscriminator (CompVis/taming-transformers taming/modules/losses/vqperceptual.py): pixel L1 (or L2) + an
optional LPIPS term + the model's own term (VQ commitment / codebook, or beta * KL) + a PatchGAN loss with the adaptive
weight, the discriminator starting at `disc_start`. The training loop (`vltk.train.loop`) drives it like the
generators' tasks (`vltk.objectives.magvlt` and its siblings).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from accelerate import Accelerator

from vltk.config import require_range
from vltk.imagetok.losses import (
    Perceptual, adaptive_weight, discriminator_loss, gan_factor, generator_loss, pixel_loss,
)
from vltk.train import OptimConfig, Part, unwrap


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
    pixel: Literal["l1", "l2"] = "l1"
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0  # LPIPS weight, used only when perceptual_weights is given
    perceptual_weights: str | None = None  # torchvision VGG16 state dict; None turns the perceptual loss off
    disc_weight: float = 0.8  # taming's disc_weight, times the adaptive weight; 0 = no discriminator at all
    disc_start: int = 0  # optimiser step at which the discriminator starts training and the G term starts
    disc_ramp_steps: int = 0  # then the GAN weight ramps linearly from 0 to 1 over this many steps
    disc_loss: Literal["hinge", "vanilla"] = "hinge"
    adaptive_clamp: float = 1e4
    disc_channels: int = 64  # PatchGAN ndf
    disc_layers: int = 3
    disc_norm: Literal["batch", "group"] = "group"  # real and fake go through D as one batch: BatchNorm would mix them
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.5, 0.9)

    def __post_init__(self) -> None:
        require_range(self, "pixel_weight", "perceptual_weight", "disc_weight", "disc_start", "disc_ramp_steps",
                      low=0, prefix="loss.")
        require_range(self, "adaptive_clamp", low=0, strict=True, prefix="loss.")

    def disc_optim(self, optim: OptimConfig) -> OptimConfig:
        """The discriminator's optimiser: its own lr and betas, a constant schedule, the generator's clipping."""
        return OptimConfig(lr=self.disc_lr, betas=self.disc_betas, weight_decay=0.0, eps=optim.eps,
                           schedule="constant", grad_clip=optim.grad_clip)


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [-1, 1], measured on the [0, 1] scale."""
    mse = ((recon.clamp(-1, 1) - target) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


class TokenizerTask:
    """One micro-batch of VQ-GAN / beta-VAE training: reconstruction + model term + GAN."""

    def __init__(self, parts: dict[str, Part], loss: LossConfig, accelerator: Accelerator,
                 perceptual: Perceptual | None):
        self.parts, self.cfg, self.accelerator, self.perceptual = parts, loss, accelerator, perceptual

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        x = batch.to(self.accelerator.device)
        out = self.parts["model"].module(x)
        recon = out.recon.float()
        pixel = pixel_loss(x, recon, self.cfg.pixel)
        rec = self.cfg.pixel_weight * pixel
        stats = {"pixel": pixel.item()}
        if self.perceptual is not None:
            perceptual = self.perceptual(x, recon).mean()
            rec = rec + self.cfg.perceptual_weight * perceptual
            stats["perceptual"] = perceptual.item()
        loss = rec + sum(out.loss_terms.values())
        # D trains from disc_start on; the G term's weight ramps from 0 to 1 over the following disc_ramp_steps.
        gan = "disc" in self.parts and step >= self.cfg.disc_start
        factor = gan_factor(step, self.cfg.disc_start, self.cfg.disc_ramp_steps) if gan else 0.0
        if factor > 0:
            # G term through the plain discriminator with its weights frozen: no D gradients, no DDP hooks.
            disc = unwrap(self.accelerator, self.parts["disc"].module)
            disc.requires_grad_(False)
            g_loss = generator_loss(self.cfg.disc_loss, disc(recon).float())
            disc.requires_grad_(True)
            last_layer = unwrap(self.accelerator, self.parts["model"].module).last_layer
            d_weight = self.cfg.disc_weight * adaptive_weight(rec, g_loss, last_layer, clamp=self.cfg.adaptive_clamp)
            loss = loss + d_weight * factor * g_loss
            stats.update(g_loss=g_loss.item(), d_weight=float(d_weight), gan_factor=factor)
        self.accelerator.backward(loss)
        if gan:
            # Real and fake in one forward: one DDP reduction per backward.
            logits_real, logits_fake = self.parts["disc"].module(torch.cat([x, recon.detach()])).float().chunk(2)
            d_loss = discriminator_loss(self.cfg.disc_loss, logits_real, logits_fake)
            self.accelerator.backward(d_loss)
            stats.update(d_loss=d_loss.item(), logits_real=logits_real.mean().item(),
                         logits_fake=logits_fake.mean().item())
        stats.update({k: v.item() for k, v in out.loss_terms.items()})
        stats.update({k: float(v) for k, v in out.stats.items()})
        stats.update(loss=loss.item(), psnr=psnr(recon.detach(), x).mean().item())
        return stats
