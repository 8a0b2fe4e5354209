"""What every generator objective shares: random draws keyed by a sample's place in the global batch, and losses
normalised over the global batch.

    draws = Draws(seed, step, global_batch=256, offsets=batch["index"] - step * 256)
    r = draws.uniform("ratio")                  # (b,): sample j's value is the same whatever the process split
    task = draws.choice("task", (8, 1, 1))      # one draw for the whole step
    mean = GlobalMean(reduce_sum, world_size)
    loss = mean(ce_sum, count)                  # sum over this process / count over all processes x world size

Why: a run must not depend on how its global batch is split over processes. Every random number a sample sees is
drawn for the whole global batch from a generator seeded by (seed, step, name) and then sliced, so the masks of one
process of two equal those of one process alone; and a token-mean loss divides by the number of tokens of the whole
batch (all-reduced), then multiplies by the world size because DDP averages the gradients. With these, two processes
and one process take the same optimiser steps (up to float summation order; dropout aside, which draws per process).
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

ReduceSum = Callable[[torch.Tensor], torch.Tensor]


def batch_offsets(index: torch.Tensor, step: int, global_batch: int) -> torch.Tensor:
    """(b,) places in the global batch of step `step` of the samples at stream positions `index`."""
    offsets = index.long() - step * global_batch
    if offsets.numel() and (offsets.min() < 0 or offsets.max() >= global_batch):
        raise ValueError(f"stream positions {index.min()}..{index.max()} are not in global batch {step} "
                         f"(positions {step * global_batch}..{(step + 1) * global_batch - 1})")
    return offsets


class Draws:
    """Uniform draws for the samples of one micro-batch, each a function of (seed, step, name, place in the batch)."""

    def __init__(self, seed: int, step: int, global_batch: int, offsets: torch.Tensor, device: torch.device | str):
        self.seed, self.step, self.global_batch = seed, step, global_batch
        self.offsets, self.device = offsets.cpu(), device

    def generator(self, name: str, salt: int = 0) -> torch.Generator:
        key = (((self.seed * 1_000_003 + self.step) * 1_009 + zlib.crc32(name.encode())) * 31 + salt) % (1 << 63)
        return torch.Generator().manual_seed(key)

    def sliced(self, name: str, draw: Callable[[torch.Generator, int], torch.Tensor]) -> torch.Tensor:
        """draw(generator, global_batch) -> (global_batch, ...) made on the CPU with `name`'s generator; this
        micro-batch's rows of it, on the device."""
        return draw(self.generator(name), self.global_batch)[self.offsets].to(self.device)

    def uniform(self, name: str, *shape: int) -> torch.Tensor:
        """(b, *shape) float32 in [0, 1): drawn for the whole global batch on the CPU, sliced, moved to the device."""
        return self.sliced(name, lambda g, batch: torch.rand((batch, *shape), generator=g))

    def choice(self, name: str, weights: Sequence[float], salt: int = 0) -> int:
        """One index drawn with probability proportional to `weights`, for the whole step (salt: e.g. the rank)."""
        probs = torch.tensor(weights, dtype=torch.float64)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self.generator(name, salt)))


class GlobalMean:
    """sum over this process's items / count over all processes' items, times the world size (DDP averages)."""

    def __init__(self, reduce_sum: ReduceSum, world_size: int):
        self.reduce_sum, self.world_size = reduce_sum, world_size

    def __call__(self, local_sum: torch.Tensor, local_count: int | torch.Tensor) -> torch.Tensor:
        count = torch.as_tensor(local_count, dtype=torch.float32, device=local_sum.device)
        total = self.reduce_sum(count.clone()) if self.world_size > 1 else count
        return local_sum * self.world_size / total.clamp(min=1.0)


def token_ce(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of label-smoothed CE, number of argmax hits) over (M, V) logits and (M,) targets, in float32."""
    logits = logits.float()
    loss = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")
    hits = (logits.argmax(dim=-1) == targets).sum()
    return loss, hits
