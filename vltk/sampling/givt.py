"""GIVT's samplers: causal decoding through the KV cache (ancestral or beam search with fans) and MaskGIT decoding,
both with optional density-based CFG (GIVT §3.4; big_vision givt/decode.py).

    cfg = GIVTSampling(temperature=0.95, cfg_weight=0.4)             # variance scaling t, DB-CFG w
    g = torch.Generator().manual_seed(0)
    z, stats = sample(model, cfg, batch=8, labels=labels, generator=g)  # (8, L, d) float32 in GIVT's token space
    print(stats["acceptance"])                                       # DB-CFG's acceptance rate (only when w > 0)
    z, _ = sample(model, GIVTSampling(beams=4, fans=8), batch=8, labels=labels, generator=g)   # causal beam search
    z, _ = sample(uvim, GIVTSampling(beams=4, fans=8), batch=8, image=images, generator=g)     # UViM: one per image

Every token's GMM is read with the temperature t multiplying its standard deviations and the mixture temperature
multiplying its mixture logits (`GMM.from_logits`). With cfg_weight w > 0 each forward pass runs on 2B rows, the B
conditional rows then the same B rows dropped (`drop`: NOLABEL and no caption), and a token is drawn from
p_c^(1+w) p_u^(-w) by `vltk.sampling.dbcfg`'s rejection sampler: the component is drawn from the conditional mixture
(per channel for the per_channel kind) and the same index picks the unconditional one. A full-covariance GMM cannot
be guided (the rejection sampler is per channel), and beam search is not combined with guidance (a guided density is
unnormalised: its scores are not log-probabilities), as in the reference.

A discrete GIVT (codebook_size > 0, UViM's VQ baseline) draws code ids from softmax(logits / temperature): the
temperature divides its logits, and mixture_temperature is unused; it returns (B, L) long ids. It is not guided.
An encoder-decoder GIVT (UViM) takes `image` (B, 3, H, W) in [-1, 1] instead of labels / text: the prefill encodes it
once, and beam search's cache reorders carry its keys / values with the beams. It is not guided either (there is no
unconditional model to guide with).

Causal: the prefix fills one KV cache (of 2B rows when guided), then one step per token. Beam search (`beams` or
`fans` > 1) scores a beam by the log-density of its tokens under the scaled GMMs, as the reference does.

MaskGIT: S steps from an all-masked, all-zero input; after step s (ratio r = (s + 1) / S) the `maskgit_mask_counts`[s]
least confident still-unknown positions stay masked and are zeroed. Confidence is the log-density of the sampled vector
(with CFG the unnormalised guided log-density at the chosen component, summed over channels) plus
choice_temperature (1 - r) Gumbel noise; known positions are never re-masked. Only unknown positions are drawn: the
reference draws every position and keeps the known values, which is the same law for less work.

The samplers assume model.eval(). All sampling math runs in float32 (vltk's choice); randomness comes only from the
explicit generator.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from vltk.config import require_range
from vltk.masking import top_n
from vltk.models.givt import GIVT, GIVTCache
from vltk.models.gmm import GMM
from vltk.sampling.gmm import sample as sample_gmm
from vltk.sampling.argvlt import new_cache
from vltk.sampling.beam import CategoricalFan, beam_search
from vltk.sampling.common import gumbel
from vltk.sampling.common import sample as sample_categorical
from vltk.sampling.dbcfg import (ENVELOPES, Envelope, at_component, guided_log_density, pick_component,
                                 rejection_sample)
from vltk.schedules import mask_fraction


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTSampling:
    """The sampler's knobs; defaults are big_vision's 256 px settings (configs/proj/givt)."""

    temperature: float = 0.95  # variance scaling: multiplies every sigma (256 px causal; 0.9 at 512 px)
    mixture_temperature: float = 1.0  # multiplies the mixture logits (the reference's temp_probs)
    cfg_weight: float = 0.0  # DB-CFG w; 0 = no guidance and no second pass (paper: causal 0.4, MaskGIT 0.1)
    beams: int = 1  # causal only: beams > 1 or fans > 1 decode by beam search
    fans: int = 1
    rand_top_k: bool = False  # beam survivors drawn from softmax(score / rand_top_k_temperature) instead of the top
    rand_top_k_temperature: float = 1.0
    steps: int = 16  # MaskGIT decoding steps (cosine schedule)
    choice_temperature: float = 35.0  # MaskGIT's t_C, annealed by (1 - ratio); 140 at 512 px
    proposals: int = 1000  # DB-CFG's proposal cap per element before the fallback
    # DB-CFG's envelope constant: "mode" = the reference's rule at the analytic mode of the guided Gaussian, "grid" =
    # the reference's 1001-point grid search, "exact" = a valid envelope (draws follow p~ exactly); vltk.sampling.dbcfg
    envelope: Envelope = "mode"

    def __post_init__(self) -> None:
        require_range(self, "beams", "fans", "steps", "proposals")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.mixture_temperature > 0:
            raise ValueError(f"mixture_temperature must be > 0, got {self.mixture_temperature}")
        if not self.cfg_weight >= 0:
            raise ValueError(f"cfg_weight must be >= 0, got {self.cfg_weight}")
        if not self.rand_top_k_temperature > 0:
            raise ValueError(f"rand_top_k_temperature must be > 0, got {self.rand_top_k_temperature}")
        if not self.choice_temperature >= 0:
            raise ValueError(f"choice_temperature must be >= 0, got {self.choice_temperature}")
        if self.envelope not in ENVELOPES:
            raise ValueError(f"unknown envelope {self.envelope!r}; choose from {', '.join(ENVELOPES)}")
        if self.cfg_weight > 0 and self.beam_search:
            raise ValueError("beam search (beams or fans > 1) cannot be combined with DB-CFG (cfg_weight > 0)")

    @property
    def guided(self) -> bool:
        return self.cfg_weight > 0

    @property
    def beam_search(self) -> bool:
        return self.beams > 1 or self.fans > 1


def maskgit_mask_counts(length: int, steps: int) -> list[int]:
    """Positions still masked after each of `steps` MaskGIT steps for `length` tokens, all masked at the start:
    max(0, min(#unknown - 1, floor(L cos(pi/2 (s + 1) / S)))) (float32, as the reference); the last is 0."""
    ratios = torch.arange(1, steps + 1) / steps  # (S,) float32
    ceilings = torch.floor(length * mask_fraction(ratios, "cosine")).long().tolist()
    counts, unknown = [], length
    for ceiling in ceilings:
        unknown = max(0, min(unknown - 1, ceiling))
        counts.append(unknown)
    return counts


@dataclasses.dataclass(frozen=True)
class GMMFan:
    """beam_search's Fan over a batch of GMMs: n draws per row with their log-densities under those GMMs."""

    gmm: GMM  # R rows, already scaled by the temperatures

    def sample(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gmm
        fanned = GMM(g.kind, *(t.expand(n, *t.shape) for t in (g.logits, g.means, g.scales)))
        return sample_gmm(fanned, generator)  # (n, R, d), (n, R)


class _Acceptance:
    """DB-CFG's acceptance count over every rejection-sampled element of one sampler call."""

    def __init__(self) -> None:
        self.accepted, self.total = 0, 0

    def add(self, accepted: torch.Tensor) -> None:
        self.accepted, self.total = self.accepted + accepted.sum(), self.total + accepted.numel()

    def stats(self, guided: bool) -> dict[str, float]:
        return {"acceptance": float(self.accepted) / max(self.total, 1)} if guided else {}


def _gmm(model: GIVT, cfg: GIVTSampling, raw: torch.Tensor) -> GMM:
    return GMM.from_logits(raw, model.cfg.gmm, scale_temperature=cfg.temperature,
                           mixture_temperature=cfg.mixture_temperature)


def _fan(model: GIVT, cfg: GIVTSampling, raw: torch.Tensor) -> GMMFan | CategoricalFan:
    """beam_search's Fan for the (R, num_logits) raw outputs: code logits / temperature, or the scaled GMMs."""
    return CategoricalFan(raw.float() / cfg.temperature) if model.cfg.codebook_size else GMMFan(_gmm(model, cfg, raw))


def _feed(model: GIVT, z: torch.Tensor) -> torch.Tensor:
    """(R, ...) drawn tokens -> (R, 1, ...) the step's input: long code ids, or soft tokens in the model's dtype."""
    return z.unsqueeze(1) if model.cfg.codebook_size else z.unsqueeze(1).to(model.embed_tokens.weight.dtype)


def _draw(model: GIVT, cfg: GIVTSampling, raw: torch.Tensor, raw_u: torch.Tensor | None,
          generator: torch.Generator | None, acceptance: _Acceptance) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of the (..., num_logits) raw outputs (and, guided, the unconditional pass's raw_u):
    (z (..., d) float32, its log-density (...,): the GMM's, or with CFG the unnormalised guided one). Discrete:
    (ids (...,) long, their probabilities (...,)) from softmax(raw / temperature)."""
    if model.cfg.codebook_size:
        return sample_categorical(raw.float() / cfg.temperature, generator)
    gmm = _gmm(model, cfg, raw)
    if raw_u is None:
        return sample_gmm(gmm, generator)
    gmm_u = _gmm(model, cfg, raw_u)
    index = pick_component(gmm.logits, generator)  # (...,), or (..., d) per channel: the conditional mixture's

    def chosen(params: torch.Tensor) -> torch.Tensor:  # (..., k, d) or per channel (..., d, k, 1) -> (..., d)
        picked = at_component(params, index)
        return picked[..., 0] if gmm.kind == "per_channel" else picked

    mu_c, sigma_c, mu_u, sigma_u = map(chosen, (gmm.means, gmm.scales, gmm_u.means, gmm_u.scales))
    z, accepted, _ = rejection_sample(mu_c, sigma_c, mu_u, sigma_u, cfg.cfg_weight, generator,
                                      proposals=cfg.proposals, envelope=cfg.envelope)
    acceptance.add(accepted)
    return z, guided_log_density(z, mu_c, sigma_c, mu_u, sigma_u, cfg.cfg_weight).sum(-1)


def _conditions(model: GIVT, cfg: GIVTSampling, batch: int, labels: torch.Tensor | None,
                text: torch.Tensor | None, text_len: torch.Tensor | None,
                image: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """The model's condition keywords: B rows, or guided 2B rows (the B conditions, then the same B dropped)."""
    if model.cfg.gmm.kind == "full" and cfg.guided:
        raise ValueError("a full-covariance GIVT cannot be guided: DB-CFG samples per channel (set cfg_weight = 0)")
    if (model.cfg.codebook_size or model.cfg.encoder is not None) and cfg.guided:
        raise ValueError("a discrete or image-conditioned (UViM) GIVT is not guided: set cfg_weight = 0")
    for name, value in (("labels", labels), ("text", text), ("text_len", text_len), ("image", image)):
        if value is not None and value.shape[0] != batch:
            raise ValueError(f"{name} has {value.shape[0]} rows for a batch of {batch}")
    if not cfg.guided:
        return dict(labels=labels, text=text, text_len=text_len, image=image)
    twice = [None if t is None else torch.cat([t, t]) for t in (labels, text, text_len)]
    drop = torch.arange(2 * batch, device=model.positions.device) >= batch  # (2B,)
    return dict(labels=twice[0], text=twice[1], text_len=twice[2], drop=drop)


def _split(raw: torch.Tensor, guided: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rows, ...) raw outputs -> the conditional rows and (guided) the unconditional ones."""
    return tuple(raw.chunk(2)) if guided else (raw, None)


# ---- the samplers ----

@torch.no_grad()
def sample_causal(model: GIVT, cfg: GIVTSampling, *, batch: int, labels: torch.Tensor | None = None,
                  text: torch.Tensor | None = None, text_len: torch.Tensor | None = None,
                  image: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """(B, L, d) float32 tokens ((B, L) long ids for a discrete GIVT) of a causal GIVT for labels (B,) and / or
    captions text (B, C) with text_len (B,), or images (B, 3, H, W) (with an encoder), and the stats
    ({"acceptance": rate} when guided). Ancestral, or beam search when beams or fans > 1."""
    if model.cfg.variant != "causal":
        raise ValueError(f"sample_causal needs the causal GIVT, got variant {model.cfg.variant!r}")
    condition = _conditions(model, cfg, batch, labels, text, text_len, image)
    if cfg.beam_search:
        return _beam_search(model, cfg, batch, condition, generator), {}
    rows = 2 * batch if cfg.guided else batch
    cache = new_cache(model, rows, model.positions.device)
    acceptance, tokens = _Acceptance(), []
    raw = model.prefill(cache, **condition)  # (rows, num_logits): token 0's GMM
    for i in range(model.cfg.image_tokens):
        z, _ = _draw(model, cfg, *_split(raw, cfg.guided), generator, acceptance)  # (B, d)
        tokens.append(z)
        if i + 1 < model.cfg.image_tokens:  # both halves are fed the same (guided) token
            fed = torch.cat([z, z]) if cfg.guided else z
            raw = model.step(cache, _feed(model, fed))
    return torch.stack(tokens, dim=1), acceptance.stats(cfg.guided)


def _beam_search(model: GIVT, cfg: GIVTSampling, batch: int, condition: dict[str, torch.Tensor | None],
                 generator: torch.Generator | None) -> torch.Tensor:
    """(B, L, d) (discrete: (B, L)) the best beam of each sample (vltk.sampling.beam); the cache grows to B * beams
    rows, the encoded image's keys / values with it (`GIVTCache.reorder`)."""

    def step(cache: GIVTCache, last: torch.Tensor | None) -> tuple[GIVTCache, GMMFan | CategoricalFan]:
        raw = model.prefill(cache, **condition) if last is None else model.step(cache, _feed(model, last))
        return cache, _fan(model, cfg, raw)

    def reorder(cache: GIVTCache, index: torch.Tensor) -> GIVTCache:
        cache.reorder(index)
        return cache

    tokens, _ = beam_search(step, new_cache(model, batch, model.positions.device), batch=batch, beams=cfg.beams,
                            fans=cfg.fans, length=model.cfg.image_tokens, generator=generator, reorder_fn=reorder,
                            rand_top_k=cfg.rand_top_k, rand_top_k_temperature=cfg.rand_top_k_temperature)
    return tokens


@torch.no_grad()
def sample_maskgit(model: GIVT, cfg: GIVTSampling, *, batch: int, labels: torch.Tensor | None = None,
                   text: torch.Tensor | None = None, text_len: torch.Tensor | None = None,
                   generator: torch.Generator | None = None,
                   on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """(B, L, d) float32 tokens of a MaskGIT GIVT in cfg.steps steps, and the stats (as `sample_causal`).
    on_step(s, z (B, L, d), masked (B, L) bool) sees the state after each step s (masked tokens are zero)."""
    if model.cfg.variant != "maskgit":
        raise ValueError(f"sample_maskgit needs the maskgit GIVT, got variant {model.cfg.variant!r}")
    if cfg.beam_search:
        raise ValueError("beam search is for the causal GIVT only: set beams = fans = 1")
    condition = _conditions(model, cfg, batch, labels, text, text_len)
    device, length, d = model.positions.device, model.cfg.image_tokens, model.cfg.latent_channels
    z = torch.zeros(batch, length, d, device=device)
    masked = torch.ones(batch, length, dtype=torch.bool, device=device)
    acceptance = _Acceptance()
    for s, keep in enumerate(maskgit_mask_counts(length, cfg.steps)):
        inputs, mask_in = (torch.cat([z, z]), torch.cat([masked, masked])) if cfg.guided else (z, masked)
        raw = model(inputs.to(model.embed_tokens.weight.dtype), **condition, masked=mask_in)  # (rows, L, logits)
        raw_c, raw_u = _split(raw, cfg.guided)
        drawn, log_density = _draw(model, cfg, raw_c[masked], None if raw_u is None else raw_u[masked], generator,
                                   acceptance)  # (M, d), (M,): the unknown positions, row-major
        z = z.masked_scatter(masked.unsqueeze(-1), drawn)
        confidence = torch.zeros(batch, length, device=device).masked_scatter(masked, log_density)
        ratio = (s + 1) / cfg.steps
        choice = confidence + cfg.choice_temperature * (1 - ratio) * gumbel(masked.shape, generator, device)
        # The `keep` least confident unknown positions stay masked (known ones are never candidates).
        masked = top_n(-choice, masked, torch.full((batch,), keep, device=device))
        z = z.masked_fill(masked.unsqueeze(-1), 0.0)
        if on_step is not None:
            on_step(s, z, masked)
    return z, acceptance.stats(cfg.guided)


def sample(model: GIVT, cfg: GIVTSampling, **kwargs) -> tuple[torch.Tensor, dict[str, float]]:
    """`sample_causal` or `sample_maskgit`, by the model's variant."""
    return (sample_causal if model.cfg.variant == "causal" else sample_maskgit)(model, cfg, **kwargs)
