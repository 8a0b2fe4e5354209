"""Mask schedules and mask counts: pure functions of a ratio (MAGVLT §3.1-3.3; magvlt maskgit.py).

    fraction = mask_fraction(r, "cosine")                 # r = progress in [0, 1]: 1 at r = 0, 0 at r = 1
    count = mask_count(fraction, n, rounding="ceil")      # clamp(ceil(fraction * n), 1, n)

Every schedule is written as the masked fraction of a progress r: gamma(0) = 1 (everything masked) and gamma(1) = 0.
Training draws r ~ U(0, 1) per sample. MAGVLT's text schedule in the official code is gamma_T(r) = r, i.e. `linear`
applied to 1 - r; with r uniform that is the same law as `linear(r)` for the text alone, and in IT2IT it makes the image
and text ratios anti-correlated (one shared r: a nearly fully masked image goes with a lightly masked text).

Rounding is explicit per use: first-pass training masks take ceil (at least 1), UnrollMask re-masks take floor among
the previously masked positions (at least 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["cosine", "linear", "sqrt"]
Rounding = Literal["ceil", "floor"]
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "sqrt")


def mask_fraction(r: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """The fraction of tokens masked at progress r (any shape, float): cosine cos(pi r / 2), linear 1 - r, sqrt 1 - sqrt(r)."""
    if schedule == "cosine":
        return torch.cos(r * (math.pi / 2))
    if schedule == "linear":
        return 1.0 - r
    if schedule == "sqrt":
        return 1.0 - torch.sqrt(r)
    raise ValueError(f"unknown mask schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")


def mask_count(fraction: torch.Tensor, n: torch.Tensor | int, rounding: Rounding) -> torch.Tensor:
    """(B,) long: clamp(round(fraction * n), 1, n) with `rounding` ceil or floor; n is a count per row or one int.

    Computed in float32 as the official code does: cos(pi/2) is -4.4e-8 there, so r = 1 gives a fraction <= 0 and the
    clamp makes it 1 (the minimum of 1 is the official `_get_t2i_mask`'s).
    """
    n = torch.as_tensor(n, device=fraction.device).expand_as(fraction)
    scaled = fraction.float() * n.float()
    counted = torch.ceil(scaled) if rounding == "ceil" else torch.floor(scaled)
    return torch.minimum(counted.long().clamp(min=1), n.long())
