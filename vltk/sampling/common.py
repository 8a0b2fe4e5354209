"""What every sampler shares: logit filters and categorical draws, in float32, from an explicit generator.

    logits = filter_logits(logits / temperature, top_k=32, top_p=None)
    ids, probs = sample(logits, generator)           # (..., ) ids and the probability of each drawn id
    logits = guide(cond, uncond, w)                  # classifier-free guidance: c + w (c - u), float32

Sampling math runs in float32 even when the model ran under bf16 / fp16 autocast: temperatures of 0.1-0.6 amplify
half-precision error (vltk's choice; neither paper says).
"""

from __future__ import annotations

from typing import Literal

import torch

GuidanceSchedule = Literal["constant", "linear"]
GUIDANCE_SCHEDULES: tuple[str, ...] = ("constant", "linear")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """(..., V) float32 logits with all but the top-k, then all outside the top-p nucleus, set to -inf.

    top_p keeps the smallest set of tokens whose probability reaches p (the first token always stays), renormalised
    implicitly by the softmax that follows.
    """
    logits = logits.float()
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # mass before this token already >= p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """(M,) ids drawn from (M, V) probabilities (not necessarily normalised) with one uniform (M,) in [0, 1) per row:
    the first id whose cumulative mass exceeds u * total, so a zero-probability id is never drawn.

    One random number per row instead of torch.multinomial's V exponentials: the draw that dominated sampling time
    over a codebook on CPU. The clamp only catches u * total rounding up to the total in float32.
    """
    cdf = probs.float().cumsum(dim=-1)  # (M, V)
    target = (uniform * cdf[:, -1]).unsqueeze(1).contiguous()  # (M, 1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)


def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one id per row of (..., V) logits (float32 softmax); return (ids (...,), their probabilities (...,))."""
    probs = logits.float().softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])  # (M, V)
    uniform = torch.rand(flat.shape[0], generator=generator, device=flat.device)
    ids = inverse_cdf(flat, uniform).view(probs.shape[:-1])
    return ids, probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)) of `shape`, float32, u ~ U(0, 1) kept away from 0 and 1."""
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(u))


# ---- classifier-free guidance (Ho & Salimans 2022), shared by MAGVLT's and ARGVLT's samplers ----

def check_guidance(w: float, schedule: str) -> None:
    """A sampler config's guidance scale and schedule, or a one-line ValueError naming the key."""
    if not w >= 0:  # also refuses NaN
        raise ValueError(f"guidance must be >= 0 (0 = unguided), got {w!r}")
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"unknown guidance_schedule {schedule!r}; choose from {', '.join(GUIDANCE_SCHEDULES)}")


def guidance_scales(w: float, steps: int, schedule: GuidanceSchedule) -> list[float]:
    """The guidance scale at each of `steps` decoding steps: w throughout, or "linear": w (t + 1) / T at step
    t = 0..T-1, Muse's linear ramp up to w. It starts at w / T rather than at 0 (open-muse's linspace(0, w, T)), so
    that every step's 2B-row pass is used and a one-step sampler is guided at w."""
    if schedule == "constant":
        return [w] * steps
    return [w * (t + 1) / steps for t in range(steps)]


def guide(cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:
    """(M, V) float32 guided logits c + w (c - u) from the conditional and null-condition (M, V) logits."""
    cond = cond.float()
    return cond + w * (cond - uncond.float())
