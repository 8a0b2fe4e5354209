"""The label autoencoder's training task (UViM stage I as GIVT trains it): per label group the softmax cross-entropy
over pixels (mean), summed over the groups, plus the bottleneck's term: beta * KL (GIVT's VAE, closed form, summed
over each example's latent and averaged over the batch: google-research/big_vision big_vision/trainers/proj/givt/
vae.py `vae_loss_fn` with rec_loss_fn "xent") or the VQ commitment loss (UViM's trainers/proj/uvim/vqvae.py,
w_commitment 0.25, with an EMA dictionary). The training loop (`vltk.train.loop`) drives it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from vltk.train import Part


def reconstruction_loss(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """{group: cross-entropy} of logits {group: (B, K, H, W)} against labels (B, H, W, C), channel i for the i-th
    group, averaged over pixels and examples (big_vision utils.weighted_softmax_xent with normalize=True: the mean over
    an example's pixels, then over the batch)."""
    return {name: F.cross_entropy(x.float(), labels[..., i]) for i, (name, x) in enumerate(logits.items())}


class LabelTokenizerTask:
    """One micro-batch of (images, labels, stream positions): only the labels are used (stage I sees labels alone)."""

    def __init__(self, parts: dict[str, Part], accelerator: Accelerator):
        self.parts, self.accelerator = parts, accelerator

    def train_step(self, batch: tuple[torch.Tensor, ...], step: int) -> dict[str, float]:
        labels = batch[1].to(self.accelerator.device)
        out = self.parts["model"].module(labels)
        rec = reconstruction_loss(out.logits, labels)
        loss = sum(rec.values()) + sum(out.loss_terms.values())
        self.accelerator.backward(loss)
        return {"loss": loss.item(), **{f"xent_{k}": v.item() for k, v in rec.items()},
                **{k: v.item() for k, v in out.loss_terms.items()}, **{k: float(v) for k, v in out.stats.items()}}
