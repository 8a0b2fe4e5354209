"""Logit filters and draws shared by the samplers, on hand-computed cases."""

from __future__ import annotations

import math

import torch

from vltk.sampling.common import filter_logits, gumbel, inverse_cdf, sample

PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])


def kept(logits: torch.Tensor) -> list[bool]:
    return torch.isfinite(logits)[0].tolist()


def test_top_k_keeps_the_k_largest():
    assert kept(filter_logits(PROBS.log(), top_k=2)) == [True, True, False, False]
    assert kept(filter_logits(PROBS.log(), top_k=10)) == [True] * 4  # k >= V: nothing dropped


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert kept(filter_logits(PROBS.log(), top_p=0.7)) == [True, True, False, False]  # 0.5 + 0.3 >= 0.7
    assert kept(filter_logits(PROBS.log(), top_p=0.5)) == [True, False, False, False]  # 0.5 alone reaches 0.5
    assert kept(filter_logits(PROBS.log(), top_p=0.01)) == [True, False, False, False]  # the first always stays
    shuffled = PROBS[:, [2, 0, 3, 1]].log()  # the order of the vocabulary does not matter
    assert kept(filter_logits(shuffled, top_p=0.7)) == [False, True, False, True]


def test_filters_compute_in_float32():
    assert filter_logits(PROBS.log().half(), top_k=2).dtype == torch.float32


def test_sample_follows_the_softmax_and_reports_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = PROBS.log().repeat(20000, 1)
    ids, probs = sample(logits, g)
    freq = torch.bincount(ids, minlength=4).float() / 20000
    assert torch.allclose(freq, PROBS[0], atol=0.015)
    assert torch.allclose(probs, PROBS[0][ids])
    ids2, _ = sample(logits, torch.Generator().manual_seed(0))
    assert torch.equal(ids, ids2)


def test_gumbel_noise_has_the_gumbel_mean():
    noise = gumbel((200000,), torch.Generator().manual_seed(0))
    assert abs(noise.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni constant
    assert abs(noise.var().item() - math.pi ** 2 / 6) < 0.03


def test_inverse_cdf_inverts_the_cumulative_mass_and_skips_zero_probabilities():
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75]] * 5)  # unnormalised rows work the same (scaled below)
    uniform = torch.tensor([0.0, 0.2499, 0.25, 0.9999, 1 - 2**-24])
    # by hand: the cumulative mass is 0, .25, .25, 1; the draw is the first id whose mass exceeds u
    assert inverse_cdf(probs, uniform).tolist() == [1, 1, 3, 3, 3]
    assert inverse_cdf(probs * 7, uniform).tolist() == [1, 1, 3, 3, 3]
