"""GIVT's density-based CFG (DB-CFG): rejection sampling from p~ = p_c^(1+w) p_u^(-w) (GIVT §3.4, App. D).

    g = torch.Generator().manual_seed(0)
    x, accepted, rate = sample_guided(logits_c, means_c, scales_c, means_u, scales_u, w=0.4, generator=g)
    # logits_c (B, L, k) conditional mixture logits; means / scales (B, L, k, d) of both passes -> x (B, L, d)
    order = guided_log_density(x, mu_c, sigma_c, mu_u, sigma_u, w).sum(-1)   # MaskGIT ordering: unnormalised

The steps follow big_vision's `CFGDensity` (`parallel_decode.py`): the mixture component is drawn from the
CONDITIONAL mixture and the same index picks the unconditional component, leaving two diagonal Gaussians; every channel
is then rejection-sampled on its own (the result is factorised) with the proposal q = N(mu_c, 2 max(sigma_c, sigma_u)),
the envelope M = max over the grid mu_c + linspace(-10, 10, 1001) of p~(x), divided by q(mu_c), up to 1000 proposals,
the first accepted one kept, and a draw from N(mu_c, sigma_c) where none is. Variance scaling (`temp`) multiplies the
scales before they come here. With w = 0 the target is N(mu_c, sigma_c) and the sampler is exact (the reference skips
guidance altogether at w = 0; so should a caller, it saves the second forward pass).

Where this envelope is valid: M q(x) = max p~ * q(x) / q(mu_c) reaches max p~ only at mu_c. It bounds p~ everywhere iff
the guided Gaussian's mode is mu_c (i.e. mu_u = mu_c) and its std s, 1/s^2 = (1+w)/sigma_c^2 - w/sigma_u^2, is at
most 2 max(sigma_c, sigma_u); w = 0 is such a case. Otherwise p~ > M q near the guided mode, those proposals are
accepted with probability 1, and the draws follow min(p~, M q) instead of p~: pulled back towards mu_c, a weaker
guidance. We keep the reference rule (the published FIDs were measured with it); the tests check both regimes. Also
from the reference: a scale far below the grid step (0.02) can make the grid miss the peak (M too small, same bias),
and an improper target ((1+w)/sigma_c^2 <= w/sigma_u^2) puts M at the grid's edge, so almost nothing is accepted and
the fallback decides.

The envelope constant M has three rules (`envelope`):
- "grid": the reference's, max p~ over the grid above.
- "mode" (the default): the same rule, M = max p~ / q(mu_c), with max p~ taken at the guided Gaussian's analytic mode
  m = ((1+w) mu_c / sigma_c^2 - w mu_u / sigma_u^2) / a, a = (1+w) / sigma_c^2 - w / sigma_u^2 > 0: no grid to miss a
  narrow peak (see above) and no 1001-point search. The draws are the reference's wherever its grid finds
  the peak.
- "exact": M = max_x p~(x) / q(x), a valid envelope, so the accepted draws follow p~ exactly; the log-ratio is a
  quadratic with precision a - 1/s^2 (s the proposal's std), maximised in closed form.
Where p~ is improper (a <= 0; "exact": a <= 1/s^2, where p~ / q grows without bound) no M exists: those values take the
conditional fallback at once (the grid rule would put M at the grid's edge and accept almost nothing).

Everything runs in float32 and in log space. Proposals come in rounds of 4, 32, 256, ... per value still rejected
(the first accepted one in drawing order is kept, as if all were drawn at once). Memory: each round holds about six float32 tensors of (proposals in the round) x
(values not yet accepted) <= max(chunk_floats, values) values.
"""

from __future__ import annotations

from typing import Literal

import torch

from vltk.models.gmm import normal_log_prob
from vltk.sampling.common import sample


def pick_component(mixture_logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(..., k) mixture logits -> (...,) component indices drawn from softmax(logits), in float32."""
    return sample(mixture_logits, generator)[0]


def at_component(params: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(..., k, d) per-component means or scales -> (..., d): those of component `index` (...,)."""
    index = index[..., None, None].expand(*index.shape, 1, params.shape[-1])  # (..., 1, d)
    return params.gather(-2, index).squeeze(-2)


def guided_log_density(x: torch.Tensor, mu_c: torch.Tensor, sigma_c: torch.Tensor, mu_u: torch.Tensor,
                       sigma_u: torch.Tensor, w: float) -> torch.Tensor:
    """log p~(x) = (1 + w) log N(x; mu_c, sigma_c) - w log N(x; mu_u, sigma_u), per channel and unnormalised."""
    return (1 + w) * normal_log_prob(x, mu_c, sigma_c) - w * normal_log_prob(x, mu_u, sigma_u)


Envelope = Literal["grid", "mode", "exact"]
ENVELOPES: tuple[str, ...] = ("grid", "mode", "exact")


def guided_gaussian(mu_c: torch.Tensor, sigma_c: torch.Tensor, mu_u: torch.Tensor, sigma_u: torch.Tensor,
                    w: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p~'s precision a = (1+w)/sigma_c^2 - w/sigma_u^2 and its precision-weighted mean b = (1+w) mu_c/sigma_c^2 -
    w mu_u/sigma_u^2, elementwise: log p~ = -a x^2 / 2 + b x + const, a Gaussian with mode b / a when a > 0."""
    pc, pu = sigma_c.reciprocal().square(), sigma_u.reciprocal().square()
    return (1 + w) * pc - w * pu, (1 + w) * mu_c * pc - w * mu_u * pu


def log_envelope(mu_c: torch.Tensor, sigma_c: torch.Tensor, mu_u: torch.Tensor, sigma_u: torch.Tensor, w: float, *,
                 envelope: Envelope = "mode", grid: int = 1001, half_width: float = 10.0,
                 chunk_floats: int = 1 << 23) -> torch.Tensor:
    """log M, elementwise, by the `envelope` rule (module docstring); +inf where none exists. "grid": the max of
    log p~ over mu_c + linspace(-half_width, half_width, grid) (absolute offsets in latent units, the reference's
    grid) minus log q(mu_c), q = N(mu_c, 2 max(sigma_c, sigma_u))."""
    if envelope not in ENVELOPES:
        raise ValueError(f"unknown DB-CFG envelope {envelope!r}; choose from {', '.join(ENVELOPES)}")
    mu_c, sigma_c, mu_u, sigma_u = (t.float() for t in torch.broadcast_tensors(mu_c, sigma_c, mu_u, sigma_u))
    spread = 2 * torch.maximum(sigma_c, sigma_u)  # the proposal's std
    if envelope == "grid":
        offsets = torch.linspace(-half_width, half_width, grid, device=mu_c.device).view(-1, *[1] * mu_c.dim())
        step = max(1, chunk_floats // max(1, mu_c.numel()))
        best = torch.full_like(mu_c, float("-inf"))
        for start in range(0, grid, step):
            points = mu_c + offsets[start:start + step]  # (G', ...)
            best = torch.maximum(best, guided_log_density(points, mu_c, sigma_c, mu_u, sigma_u, w).amax(dim=0))
        return best - normal_log_prob(mu_c, mu_c, spread)
    a, b = guided_gaussian(mu_c, sigma_c, mu_u, sigma_u, w)
    if envelope == "mode":
        peak = guided_log_density(b / a, mu_c, sigma_c, mu_u, sigma_u, w)
        return torch.where(a > 0, peak - normal_log_prob(mu_c, mu_c, spread), float("inf"))
    # "exact": log p~ - log q = -(a - 1/s^2) x^2 / 2 + (b - mu_c/s^2) x + const
    pq = spread.reciprocal().square()
    at = (b - mu_c * pq) / (a - pq)
    ratio = guided_log_density(at, mu_c, sigma_c, mu_u, sigma_u, w) - normal_log_prob(at, mu_c, spread)
    return torch.where(a > pq, ratio, float("inf"))


def rejection_sample(mu_c: torch.Tensor, sigma_c: torch.Tensor, mu_u: torch.Tensor, sigma_u: torch.Tensor, w: float,
                     generator: torch.Generator | None = None, *, proposals: int = 1000,
                     envelope: Envelope = "mode", grid: int = 1001, half_width: float = 10.0,
                     chunk_floats: int = 1 << 23) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw x ~ p~ independently per element of the broadcast (...) shape of the four (...) tensors.

    Returns (x (...) float32, accepted (...) bool: a proposal was accepted (else x is the N(mu_c, sigma_c) fallback),
    the acceptance rate: the 0-dim fraction of accepted elements, for the sampler to log).
    """
    if proposals < 1:
        raise ValueError(f"proposals must be >= 1, got {proposals}")
    mu_c, sigma_c, mu_u, sigma_u = (t.float() for t in torch.broadcast_tensors(mu_c, sigma_c, mu_u, sigma_u))
    shape, device = mu_c.shape, mu_c.device
    log_m = log_envelope(mu_c, sigma_c, mu_u, sigma_u, w, envelope=envelope, grid=grid, half_width=half_width,
                         chunk_floats=chunk_floats).flatten()  # (N,)
    mu_c, sigma_c, mu_u, sigma_u = (t.flatten() for t in (mu_c, sigma_c, mu_u, sigma_u))  # (N,) each
    spread = 2 * torch.maximum(sigma_c, sigma_u)  # the proposal's std
    x = torch.empty_like(mu_c)
    accepted = torch.zeros_like(mu_c, dtype=torch.bool)
    live = torch.arange(mu_c.numel(), device=device)[log_m.isfinite()]  # no accepted proposal yet (none can be
    # without an envelope: those fall back at once)
    used, rounds = 0, 0  # proposals every live element has consumed; rounds drawn
    while used < proposals and live.numel() > 0:
        # Rounds of 4, 32, 256, ... proposals: a typical envelope accepts a proposal with probability 1/4 to 1/2, so
        # most values are done after a few and drawing all 1,000 at once would be mostly waste.
        rows = min(proposals - used, max(1, chunk_floats // live.numel()), 4 * 8 ** rounds)
        rounds += 1
        mc, sc, mu, su, sp = (t[live] for t in (mu_c, sigma_c, mu_u, sigma_u, spread))  # (n,)
        draws = mc + sp * torch.randn(rows, live.numel(), generator=generator, device=device)  # (rows, n)
        log_u = torch.rand(rows, live.numel(), generator=generator, device=device).log()
        ok = log_u + log_m[live] + normal_log_prob(draws, mc, sp) < guided_log_density(draws, mc, sc, mu, su, w)
        hit = ok.any(dim=0)  # (n,)
        first = ok.int().argmax(dim=0)  # (n,) the first accepted proposal (argmax returns the first maximum)
        x[live[hit]] = draws.gather(0, first.unsqueeze(0)).squeeze(0)[hit]
        accepted[live[hit]] = True
        live, used = live[~hit], used + rows
    fallback = mu_c + sigma_c * torch.randn(mu_c.shape, generator=generator, device=device)
    x = torch.where(accepted, x, fallback)
    return x.view(shape), accepted.view(shape), accepted.float().mean()


def sample_guided(mixture_logits_c: torch.Tensor, means_c: torch.Tensor, scales_c: torch.Tensor,
                  means_u: torch.Tensor, scales_u: torch.Tensor, w: float, generator: torch.Generator | None = None,
                  **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DB-CFG from two GMMs: (..., k) conditional mixture logits, (..., k, d) means and scales of the conditional and
    unconditional passes -> `rejection_sample`'s (x (..., d), accepted (..., d), rate). One component index is drawn
    from the conditional mixture and used for both (the unconditional mixture weights play no part)."""
    index = pick_component(mixture_logits_c, generator)  # (...,)
    return rejection_sample(at_component(means_c, index), at_component(scales_c, index), at_component(means_u, index),
                            at_component(scales_u, index), w, generator, **kwargs)
