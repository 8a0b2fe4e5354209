"""Straight-through vector quantisation with the usual remedies for codebook collapse (taming's quantize.py).

    vq = VectorQuantizer(QuantizerConfig(codebook_size=512, code_dim=8, l2_norm=True, ema=True, init="kmeans",
                                         dead_code_threshold=1.0))
    out = vq(z)                      # z (B, 8, h, w) -> out.z_q (B, 8, h, w), out.codes (B, h, w), out.loss, out.stats
    vq.lookup(out.codes)             # the codes' vectors again, (B, 8, h, w)

One class, with options:
- nearest code by squared L2 (by cosine when `l2_norm`: vectors and codes are unit length, so L2 and cosine agree);
  z_q = z + sg(e - z), so the decoder's gradient reaches the encoder unchanged;
- loss = mean ||sg(e) - z||^2 (commitment) and mean ||e - sg(z)||^2 (codebook): beta on the commitment term, or on the
  codebook term when `legacy` (taming's released models); with `ema` the codebook term is replaced by EMA updates
  (decay, eps 1e-5, Laplace-smoothed counts) and the loss is beta * commitment, as taming's EMAVectorQuantizer;
- "kmeans" init runs k-means on the first training batch once; the `initialized` buffer records it across save/load;
- codes whose EMA count of assigned vectors per batch drops below `dead_code_threshold` restart at random vectors of the
  current batch (torch's RNG, or an explicit generator for `restart_dead_codes`).
Under torch.distributed the per-batch counts and sums are all-reduced, and k-means centres and restarted codes are
broadcast from rank 0, so every process keeps the same codebook. Updates happen only in training mode, under no_grad.
Quantisation runs in float32 even under autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vltk.imagetok.config import QuantizerConfig

EMA_EPS = 1e-5


class Quantized(NamedTuple):
    z_q: torch.Tensor  # (B, D, h, w), straight-through
    codes: torch.Tensor  # (B, h, w) int64
    loss: torch.Tensor  # scalar, already weighted by beta
    stats: dict[str, float]


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the codebook that occurs in `codes`."""
    return torch.unique(codes).numel() / codebook_size


def perplexity(codes: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the histogram of `codes`: K when all K codes are equally frequent, 1 when one code is used."""
    p = torch.bincount(codes.flatten(), minlength=codebook_size).double() / codes.numel()
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> (N, K) squared L2 distances."""
    return a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)


def sample_rows(vectors: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n rows of `vectors` drawn at random: without replacement when there are enough, else with."""
    count = vectors.shape[0]
    if count >= n:
        index = torch.randperm(count, generator=generator)[:n]
    else:
        index = torch.randint(count, (n,), generator=generator)
    return vectors[index.to(vectors.device)]


def kmeans(vectors: torch.Tensor, k: int, iters: int, *, cosine: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means from k random data points; an empty cluster keeps its centre. (N, D) -> (k, D)."""
    centres = sample_rows(vectors, k, generator).clone()
    for _ in range(iters):
        assign = squared_distances(vectors, centres).argmin(1)  # (N,)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, vectors)
        centres = torch.where((counts > 0)[:, None], sums / counts.clamp(min=1)[:, None], centres)
        if cosine:
            centres = F.normalize(centres, dim=1)
    return centres


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, d = cfg.codebook_size, cfg.code_dim
        init = torch.empty(k, d).uniform_(-1 / k, 1 / k)
        if cfg.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_sum", init.clone())  # EMA of the sum of vectors assigned to each code
        else:
            self.codebook = nn.Parameter(init)
        # EMA of the number of vectors per batch assigned to each code. It starts at one so that a fresh codebook
        # equals ema_sum / ema_count; it drives dead-code restart in both modes.
        self.register_buffer("ema_count", torch.ones(k))
        self.register_buffer("initialized", torch.tensor(cfg.init == "uniform"))

    def codes(self) -> torch.Tensor:
        """The codebook as looked up: (K, D), unit rows when `l2_norm`."""
        return F.normalize(self.codebook, dim=1) if self.cfg.l2_norm else self.codebook

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code ids -> (B, D, h, w) vectors."""
        return F.embedding(codes, self.codes()).permute(0, 3, 1, 2)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, D) vectors (normalised already when `l2_norm`) -> (N,) nearest code ids."""
        return squared_distances(flat, self.codes()).argmin(1)

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (N, D) float32 vectors, N = B*h*w, unit length when `l2_norm`."""
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return F.normalize(flat, dim=1) if self.cfg.l2_norm else flat

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, h, w) nearest code ids; no statistics are updated, whatever the mode."""
        b, _, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            return self.nearest(self._flatten(z)).reshape(b, h, w)

    def forward(self, z: torch.Tensor) -> Quantized:
        cfg = self.cfg
        b, d, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            flat = self._flatten(z)  # (N, D)
            restarted = 0
            if self.training and not self.initialized:
                self._kmeans_init(flat.detach())
            elif self.training and cfg.dead_code_threshold > 0:
                # Restart before the codebook enters this step's graph: changing it in place afterwards would corrupt
                # the backward pass of a learned (non-EMA) codebook. Dead = EMA usage below the threshold so far.
                restarted = self.restart_dead_codes(flat.detach())
            codes = self.nearest(flat.detach())
            e = F.embedding(codes, self.codes())  # (N, D)
            commitment = F.mse_loss(flat, e.detach())
            if cfg.ema:
                codebook_loss = torch.zeros((), device=z.device)
                loss = cfg.beta * commitment
            else:
                codebook_loss = F.mse_loss(e, flat.detach())
                loss = commitment + cfg.beta * codebook_loss if cfg.legacy else cfg.beta * commitment + codebook_loss
            z_q = flat + (e - flat).detach()
            if self.training:
                with torch.no_grad():
                    self._update(flat.detach(), codes)
        codes = codes.reshape(b, h, w)
        stats = {
            "commitment": commitment.item(), "codebook": codebook_loss.item(), "restarted": float(restarted),
            "usage": codebook_usage(codes, cfg.codebook_size), "perplexity": perplexity(codes, cfg.codebook_size),
        }
        return Quantized(z_q.reshape(b, h, w, d).permute(0, 3, 1, 2), codes, loss, stats)

    def _kmeans_init(self, flat: torch.Tensor) -> None:
        centres = kmeans(flat, self.cfg.codebook_size, self.cfg.kmeans_iters, cosine=self.cfg.l2_norm)
        if _distributed():
            dist.broadcast(centres, src=0)
        with torch.no_grad():
            self.codebook.copy_(centres)
            if self.cfg.ema:
                self.ema_sum.copy_(centres)
            self.ema_count.fill_(1.0)
            self.initialized.fill_(True)

    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA usage statistics (and, with `ema`, the codebook) from one batch."""
        cfg = self.cfg
        decay = cfg.ema_decay
        counts = torch.bincount(codes, minlength=cfg.codebook_size).float()  # (K,)
        if _distributed():
            dist.all_reduce(counts)
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        if cfg.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)  # (K, D)
            if _distributed():
                dist.all_reduce(sums)
            self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
            # Laplace smoothing keeps unused codes' divisors away from zero while preserving the total count.
            total = self.ema_count.sum()
            smoothed = (self.ema_count + EMA_EPS) / (total + cfg.codebook_size * EMA_EPS) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, flat: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move every code whose EMA count is below the threshold onto a random row of `flat` (N, D)."""
        threshold = self.cfg.dead_code_threshold
        dead = (self.ema_count < threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        picks = sample_rows(flat, dead.numel(), generator).to(self.codebook.dtype)
        if _distributed():
            dist.broadcast(picks, src=0)  # the dead set is the same everywhere (counts are all-reduced)
        self.codebook[dead] = picks
        self.ema_count[dead] = threshold  # a fresh code gets the threshold's worth of usage before it can die again
        if self.cfg.ema:
            self.ema_sum[dead] = picks * threshold
        return dead.numel()
