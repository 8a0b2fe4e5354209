"""Beam search with fans, model-agnostic (GIVT §3.4; big_vision's `givt/decode.py`).

    def step(cache, last):               # last: (R, d) the tokens just chosen, None at the first step
        logits = model.step(cache, ...)  # feeds `last` (or nothing: the prefix is in the cache) -> (R, num_logits)
        return cache, gmm(logits)        # anything with .sample(n, generator) -> ((n, R, d), (n, R) log-probs)

    def reorder(cache, index):           # index (R',): the parent row of each surviving beam
        cache.reorder(index)
        return cache

    tokens, logp = beam_search(step, cache, batch=B, beams=4, fans=8, length=256, generator=g, reorder_fn=reorder)
    # tokens (B, 256, d): each sample's best beam; logp (B,): its cumulative log-probability

Every step draws `fans` samples from each beam's predicted distribution; a candidate's score is its parent's
cumulative log-prob plus its own, and the top `beams` candidates of each sample survive (or, with `rand_top_k`, a draw
of `beams` without replacement from softmax(score / temperature), as Gumbel-top-k). The state (a KV cache) is
re-gathered to the survivors' parents. Rows are sample-major: row r is beam r % live of sample r // live.

One deviation from the reference, on purpose: big_vision starts every beam with its own independent ancestral draw of
the first token and fans out from the second. Here the search starts from the one prefix (`init_state` has `batch`
rows) and its beams grow, min(beams, fans^t) per sample after step t, so the first token is selected too and no two
beams start as copies; `reorder_fn` expands the state as they grow. With beams = fans = 1 both are ancestral sampling.
Beam search is not combined with DB-CFG: the reference asserts it (and a guided density is unnormalised, so its
scores would not be log-probabilities).

`CategoricalFan` is the Fan of a model with logits over a vocabulary (GIVT's VQ baseline, UViM's stage II); GIVT's
Gaussian mixtures have theirs in `vltk.sampling.givt`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, TypeVar

import torch

from vltk.sampling.common import gumbel, sample

State = TypeVar("State")


class Fan(Protocol):
    """A per-row distribution over the next token."""

    def sample(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws for each of its R rows: ((n, R, *event) tokens, (n, R) their log-probabilities)."""
        ...


@dataclasses.dataclass(frozen=True)
class CategoricalFan:
    """A Fan over R rows of (R, V) logits (already divided by the temperature): n independent ids per row from
    softmax(logits), with their log-probabilities, float32."""

    logits: torch.Tensor

    def sample(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        logp = self.logits.float().log_softmax(-1)  # (R, V)
        ids, _ = sample(logp.expand(n, *logp.shape), generator)  # (n, R)
        return ids, logp.T.gather(0, ids)


def choose(scores: torch.Tensor, k: int, generator: torch.Generator | None, rand_top_k: bool,
           temperature: float) -> torch.Tensor:
    """(batch, C) candidate scores -> (batch, k) the indices of the survivors, best (or first drawn) first.

    The stochastic choice adds Gumbel noise to score / temperature and keeps the top k: a draw of k without
    replacement from softmax(score / temperature), which is what the reference's `jax.random.choice(replace=False)`
    draws. A -inf score (an impossible candidate) is never drawn before a finite one.
    """
    if rand_top_k:
        scores = scores / temperature + gumbel(scores.shape, generator, scores.device)
    return scores.topk(k, dim=1).indices


def beam_search(step_fn: Callable[[State, torch.Tensor | None], tuple[State, Fan]], init_state: State, *,
                batch: int, beams: int, fans: int, length: int, generator: torch.Generator | None,
                reorder_fn: Callable[[State, torch.Tensor], State], rand_top_k: bool = False,
                rand_top_k_temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode `length` tokens for `batch` samples; return ((batch, length, *event) the best beam of each sample,
    (batch,) float32 its cumulative log-probability). With `rand_top_k` the first survivor drawn is returned, as in
    the reference, which is not always the most likely beam.

    step_fn(state, last) -> (state, fan): feeds `last` ((R, *event), None at the first step) and returns the next
    token's distribution for each of the state's R rows. reorder_fn(state, index) -> state keeps rows `index` (R',),
    repeats allowed; it is not called after the last step.
    """
    if min(beams, fans, length) < 1:
        raise ValueError(f"beams, fans and length must be >= 1, got {beams}, {fans}, {length}")
    if rand_top_k and rand_top_k_temperature <= 0:
        raise ValueError(f"rand_top_k_temperature must be > 0, got {rand_top_k_temperature}")
    state, last, live = init_state, None, 1  # live: beams per sample so far
    score = sequences = None  # (batch, live) cumulative log-probs, (batch * live, t, *event) the beams' tokens
    for t in range(length):
        state, fan = step_fn(state, last)
        tokens, logp = fan.sample(fans, generator)  # (F, batch * live, *event), (F, batch * live)
        if score is None:  # the prefix: one beam per sample, log-prob 0
            score = logp.new_zeros(batch, 1, dtype=torch.float32)
        candidates = (score.unsqueeze(2) + logp.float().T.reshape(batch, live, fans)).flatten(1)  # (batch, live * F)
        keep = min(beams, live * fans)
        pick = choose(candidates, keep, generator, rand_top_k, rand_top_k_temperature)  # (batch, keep)
        score = candidates.gather(1, pick)
        offsets = torch.arange(batch, device=pick.device).unsqueeze(1) * live  # (batch, 1) each sample's first row
        parent = (offsets + pick // fans).flatten()  # (batch * keep,) rows of the current state
        last = tokens[(pick % fans).flatten(), parent]  # (batch * keep, *event)
        sequences = last.unsqueeze(1) if sequences is None else torch.cat([sequences[parent], last.unsqueeze(1)], 1)
        live = keep
        if t + 1 < length:
            state = reorder_fn(state, parent)
    best = sequences.view(batch, live, *sequences.shape[1:])[:, 0]
    return best, score[:, 0]
