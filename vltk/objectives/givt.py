"""GIVT's training objective (GIVT §3.2-3.3, App. C.1): the GMM negative log-likelihood of VAE latents.

    task = GIVTTask(parts, GIVTObjective(), accelerator, global_batch=256, seed=0)
    metrics = task.train_step(batch, step)      # batch: vltk.data.token_batches' dict of a VAE-encoded artifact

Each step samples z = mean + exp(logvar / 2) eps from the stored posterior (GIVT is trained on sampled latents, not the
means: GIVT §4.1), maps it through the adapter when the model has one (trained jointly, no log-det term:
the flow is volume-preserving), drops the condition of each sample with p = label_dropout (CFG), and takes the NLL of
every token under the GMM the model predicts for it:
- causal: the mean over all B x L tokens (teacher forcing; output i is p(z_i | z_<i, c));
- maskgit: the mean over the masked tokens only; each sample masks ceil(rho L) tokens, rho = cos(pi u / 2),
  u ~ U(0, 1 - min_masking_rate) (`vltk.models.givt.maskgit_mask`).
The NLL is in nats per token (a sum over the d channels) and, logged as "nll_per_dim", per channel; continuous
densities make both negative once the model is better than N(0, I) by enough, which is expected. `token_nll` is the
per-token loss of either GIVT: the GMM NLL, or for a discrete one (UViM's VQ baseline) the softmax cross-entropy of
its code indices. (This task reads VAE posteriors; a UViM task over images and label codes is not wired yet.)

Every random draw (eps, the condition drop, the mask) is made for the whole global batch from a generator keyed by
(seed, step, name) and sliced by the samples' places in it, and the mean divides by the token count of the whole
global batch, so one process and several take the same steps (`vltk.objectives.common`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from vltk.models.givt import GIVTConfig, maskgit_mask
from vltk.models.gmm import GMM, nll
from vltk.objectives.common import Draws, GlobalMean, batch_offsets
from vltk.train.loop import TOKENS, Part, unwrap


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTObjective:
    min_masking_rate: float = 0.3  # maskgit: u ~ U(0, 1 - this), so at least cos(0.35 pi) = 45% of tokens masked
    sample_latents: bool = True  # z ~ N(mean, exp(logvar)) each step (the paper); False trains on the means

    def __post_init__(self) -> None:
        if not 0 <= self.min_masking_rate < 1:
            raise ValueError(f"min_masking_rate must be in [0, 1), got {self.min_masking_rate}")


def sample_latents(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z = mean + sigma eps with sigma = exp(logvar / 2): the reparameterised posterior draw, all (b, L, d)."""
    return mean + (0.5 * logvar).exp() * noise


def token_nll(raw: torch.Tensor, tokens: torch.Tensor, cfg: GIVTConfig) -> torch.Tensor:
    """(b, L) float32 negative log-likelihood of each token under the head's (b, L, num_logits) outputs: the GMM's
    for soft tokens (b, L, d), or cross-entropy over the codebook for code indices (b, L) (codebook_size > 0)."""
    if cfg.codebook_size:
        return F.cross_entropy(raw.float().transpose(1, 2), tokens, reduction="none")
    return nll(GMM.from_logits(raw, cfg.gmm), tokens)


class GIVTTask:
    """One micro-batch of GIVT training (the `Task` of vltk.train.loop); the model is `parts["model"]`."""

    def __init__(self, parts: dict[str, Part], cfg: GIVTObjective, accelerator: Accelerator, *, global_batch: int,
                 seed: int):
        self.parts, self.cfg, self.accelerator = parts, cfg, accelerator
        self.global_batch, self.seed = global_batch, seed
        self.mean = GlobalMean(lambda t: accelerator.reduce(t, "sum"), accelerator.num_processes)

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        device, model = self.accelerator.device, self.parts["model"].module
        plain = unwrap(self.accelerator, model)
        mcfg = plain.cfg
        draws = Draws(self.seed, step, self.global_batch, batch_offsets(batch["index"], step, self.global_batch),
                      device)
        mean, logvar = batch["mean"].to(device), batch["logvar"].to(device)  # (b, L, d)
        if self.cfg.sample_latents:
            eps = draws.sliced("z", lambda g, batch: torch.randn((batch, *mean.shape[1:]), generator=g))
            z = sample_latents(mean, logvar, eps)
        else:
            z = mean
        # The adapter's parameters are used outside the wrapped forward; their gradients still reach DDP's hooks.
        tokens = plain.adapt(z)
        drop = draws.uniform("drop") < mcfg.label_dropout  # (b,)
        condition = {"labels": batch["label"].to(device) if "label" in batch else None,
                     "text": batch["text"].to(device) if mcfg.text_tokens else None,
                     "text_len": batch["text_len"].to(device) if mcfg.text_tokens else None}
        masked = None
        if mcfg.variant == "maskgit":
            masked = draws.sliced("mask", lambda g, batch: maskgit_mask(
                batch, mcfg.image_tokens, g, self.cfg.min_masking_rate))  # (b, L) True = masked
        raw = model(tokens, **condition, drop=drop, masked=masked)  # (b, L, num_logits)
        per_token = token_nll(raw, tokens, mcfg)  # (b, L) float32
        scored = torch.ones_like(per_token, dtype=torch.bool) if masked is None else masked
        loss = self.mean(per_token[scored].sum(), scored.sum())
        self.accelerator.backward(loss)
        value = loss.item()  # the loop averages the processes' values: the global mean
        return {"loss": value, "nll_per_dim": value / mcfg.latent_channels,
                TOKENS: float(tokens.shape[0] * mcfg.sequence_length)}
