"""UViM's stage-II objective as GIVT trains it (GIVT §4.2, App. C.3; big_vision trainers/proj/givt/generative.py with
configs/proj/givt/givt_coco_panoptic.py / givt_nyu_depth.py): the image-conditioned GIVT's NLL of the frozen label
autoencoder's latents, by teacher forcing.

    task = UViMTask(parts, label_model, UViMObjective(), accelerator, global_batch=64, seed=0)
    metrics = task.train_step((images, labels, index), step)   # (b, 3, H, W) in [-1, 1]; (b, H, W, C), (b,) long

Each step the label autoencoder (stage I, `vltk.labeltok`; eval mode, no gradient) encodes the labels. With GIVT's
Gaussian bottleneck, z = mu + sigma eps is drawn from its posterior (reparametrised, as GIVT draws its image VAE's
latents: GIVT §4.1) and the loss is the GMM NLL of z (B, L, d) in nats per token; with UViM's VQ bottleneck (UViM's
own stage II, Kolesnikov et al. 2022 §3.2) the tokens are the code ids (B, L) and the loss their cross-entropy
(`vltk.objectives.givt.token_nll` serves both). The GIVT reads the image through its ViT encoder.

The posterior noise is drawn as GIVT's own training draws its latents (`vltk.objectives.common.Draws`): for the whole
global batch from a generator keyed by (seed, step), then sliced by the samples' places in it (their stream
positions), so a resumed run, a run on another number of processes and one with gradient accumulation all give
sample j the same noise.
"""

from __future__ import annotations

import dataclasses

import torch
from accelerate import Accelerator

from vltk.labeltok.model import LabelAutoencoder
from vltk.objectives.common import Draws, GlobalMean, batch_offsets
from vltk.objectives.givt import sample_latents, token_nll
from vltk.train.loop import TOKENS, Part, unwrap


@dataclasses.dataclass(frozen=True, kw_only=True)
class UViMObjective:
    sample_latents: bool = True  # vae: z ~ N(mu, exp(logvar)) each step (GIVT); False trains on the posterior means


@torch.no_grad()
def label_tokens(label_model: LabelAutoencoder, labels: torch.Tensor, draws: Draws | None) -> torch.Tensor:
    """The GIVT's targets for labels (b, H, W, C): (b, L, d) posterior draws with `draws`' noise (the means when it is
    None), or the (b, L) code ids of a VQ label autoencoder."""
    first, second = label_model.encode(labels)
    if label_model.cfg.bottleneck == "vq":
        return second  # (z_q, codes): the ids
    if draws is None:
        return first
    eps = draws.sliced("z", lambda g, batch: torch.randn((batch, *first.shape[1:]), generator=g))  # (b, L, d)
    return sample_latents(first.float(), second.float(), eps)


class UViMTask:
    """One micro-batch of (images, labels, stream positions) (`vltk.data.dense.DenseBatches`); the GIVT is
    `parts["model"]`."""

    def __init__(self, parts: dict[str, Part], label_model: LabelAutoencoder, cfg: UViMObjective,
                 accelerator: Accelerator, *, global_batch: int, seed: int):
        self.parts, self.label_model, self.cfg, self.accelerator = parts, label_model, cfg, accelerator
        self.global_batch, self.seed = global_batch, seed
        self.mean = GlobalMean(lambda t: accelerator.reduce(t, "sum"), accelerator.num_processes)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int) -> dict[str, float]:
        device, model = self.accelerator.device, self.parts["model"].module
        mcfg = unwrap(self.accelerator, model).cfg
        images, labels = batch[0].to(device), batch[1].to(device)
        draws = Draws(self.seed, step, self.global_batch, batch_offsets(batch[2], step, self.global_batch), device)
        # (b, L, d) float32 or (b, L) long
        tokens = label_tokens(self.label_model, labels, draws if self.cfg.sample_latents else None)
        raw = model(tokens, image=images)  # (b, L, num_logits)
        per_token = token_nll(raw, tokens, mcfg)  # (b, L) float32
        loss = self.mean(per_token.sum(), per_token.numel())
        self.accelerator.backward(loss)
        value = loss.item()
        metrics = {"loss": value, TOKENS: float(per_token.numel())}
        if not mcfg.codebook_size:
            metrics["nll_per_dim"] = value / mcfg.latent_channels
        return metrics
