"""Which positions to mask: uniform subsets of candidate positions, as pure tensor functions.

    mask = random_subset(candidates, counts, noise)     # (B, L) bool with counts[i] True positions in row i

The randomness comes in as `noise` (uniform [0, 1), one value per position) rather than a generator, so that the
caller decides how draws are keyed: vltk keys them by the sample's place in the global batch, which makes a run's masks
independent of how the batch is split over processes and micro-batches.
"""

from __future__ import annotations

import torch


def random_subset(candidates: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: in row i, the `counts[i]` candidate positions with the largest noise (a uniform subset).

    candidates: (B, L) bool; counts: (B,) long, at most the number of candidates of the row; noise: (B, L) in [0, 1).
    """
    if candidates.shape != noise.shape or counts.shape != candidates.shape[:1]:
        raise ValueError(f"candidates {tuple(candidates.shape)}, noise {tuple(noise.shape)} and counts "
                         f"{tuple(counts.shape)} do not match")
    return top_n(noise, candidates, counts)


def top_n(scores: torch.Tensor, candidates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: in row i, the counts[i] candidate positions with the largest (finite) scores."""
    scores = scores.masked_fill(~candidates, float("-inf"))
    rank = scores.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (B, L): 0 = the row's best
    return (rank < counts.unsqueeze(1)) & candidates


def prefix_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool, True on the first lengths[i] positions of row i."""
    return torch.arange(size, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def span_mask(starts: torch.Tensor, ends: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool, True on positions [starts[i], ends[i]) of row i."""
    positions = torch.arange(size, device=starts.device).unsqueeze(0)
    return (positions >= starts.unsqueeze(1)) & (positions < ends.unsqueeze(1))
