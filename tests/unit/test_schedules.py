"""Mask schedules, counts and subset masks against MAGVLT §3.1 / §3.3, magvlt maskgit.py and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from vltk.masking import prefix_mask, random_subset, span_mask
from vltk.schedules import mask_count, mask_fraction


def test_image_counts_match_the_reference_table():
    # magvlt `_get_t2i_mask`: r = 0 -> 256, 0.25 -> 237, 0.5 -> 182, 0.75 -> 98, 0.99 -> 5 (cosine, ceil, N = 256).
    r = torch.tensor([0.0, 0.25, 0.5, 0.75, 0.99])
    counts = mask_count(mask_fraction(r, "cosine"), 256, "ceil")
    assert counts.tolist() == [256, 237, 182, 98, 5]


def test_r_one_still_masks_one_token():
    # cos(pi/2) is -4.4e-8 in float32: the clamp keeps at least one masked token (as `_get_t2i_mask`).
    assert mask_count(mask_fraction(torch.tensor([1.0]), "cosine"), 256, "ceil").item() == 1


def test_text_counts_are_ceil_r_times_length_per_row():
    # The text schedule gamma_T(r) = r is linear applied to 1 - r; counts are per-caption lengths.
    r = torch.tensor([0.0, 0.5, 0.5, 1.0, 0.3])
    n = torch.tensor([10, 11, 1, 7, 20])
    counts = mask_count(mask_fraction(1 - r, "linear"), n, "ceil")
    assert counts.tolist() == [1, 6, 1, 7, 6]


def test_floor_rounding_for_unroll_remasks():
    n_prev = torch.tensor([182, 182, 3, 1])
    r = torch.tensor([0.5, 0.0, 0.9, 0.5])
    counts = mask_count(mask_fraction(r, "cosine"), n_prev, "floor")
    expected = [math.floor(math.cos(math.pi * 0.25) * 182), 182, max(1, math.floor(math.cos(math.pi * 0.45) * 3)), 1]
    assert counts.tolist() == expected == [128, 182, 1, 1]


def test_schedules_span_one_to_zero():
    r = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(mask_fraction(r, "linear"), torch.tensor([1.0, 0.75, 0.0]))
    assert torch.allclose(mask_fraction(r, "sqrt"), torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(mask_fraction(r, "cosine"), torch.tensor([1.0, math.cos(math.pi / 8), 0.0]), atol=1e-7)
    with pytest.raises(ValueError, match="unknown mask schedule"):
        mask_fraction(r, "square")


def test_random_subset_counts_candidates_and_uniformity():
    g = torch.Generator().manual_seed(0)
    candidates = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    counts = torch.tensor([2, 1])
    hits = torch.zeros(2, 6)
    for _ in range(3000):
        mask = random_subset(candidates, counts, torch.rand(2, 6, generator=g))
        assert mask.sum(1).tolist() == [2, 1]
        assert not (mask & ~candidates).any()
        hits += mask
    # Each candidate is chosen with probability count / candidates: 1/3 and 1/3.
    assert torch.allclose(hits[0] / 3000, torch.full((6,), 1 / 3), atol=0.04)
    assert torch.allclose(hits[1, :3] / 3000, torch.full((3,), 1 / 3), atol=0.04)


def test_random_subset_is_a_function_of_the_noise():
    noise = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    mask = random_subset(torch.ones(1, 4, dtype=torch.bool), torch.tensor([2]), noise)
    assert mask.tolist() == [[False, True, False, True]]


def test_prefix_and_span_masks():
    assert prefix_mask(torch.tensor([0, 2]), 3).tolist() == [[False] * 3, [True, True, False]]
    assert span_mask(torch.tensor([1]), torch.tensor([3]), 4).tolist() == [[False, True, True, False]]
