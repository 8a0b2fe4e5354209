"""MAGVLT's samplers against kakaobrain/magvlt's and hand-computed cases; stub models make the rules observable."""

from __future__ import annotations

import dataclasses
import math
import types

import pytest
import torch
from torch import nn

from vltk.config import load_config
from vltk.errors import VltkError
from vltk.models.magvlt import MAGVLT, Inputs, MAGVLTConfig, Outputs
from vltk.pipeline.sample import SampleConfig
from vltk.sampling import magvlt as magvlt_sampling
from vltk.sampling.magvlt import (
    MAGVLTSampling, blend, center_box, generate_images, generate_joint, generate_pairs, generate_text, guidance_scales,
    guided_logits, infill_span, unmask_counts, unmask_table, window_lengths,
)

N, C, VI, VT, EOS = 16, 8, 13, 17, 16


def tiny() -> MAGVLT:
    torch.manual_seed(0)
    cfg = MAGVLTConfig(size="tiny", width=16, depth=1, heads=2, dropout=0.0, attn_dropout=0.0, image_vocab=VI,
                       text_vocab=VT, image_tokens=N, text_tokens=C)
    return MAGVLT(cfg)


class Stub(nn.Module):
    """Same forward signature as MAGVLT. Position k's distribution is uniform over `allowed[k]` ids starting at 1
    (so the placeholder 0 is never sampled), which makes the tempered probability of *any* sampled id 1 / allowed[k]:
    a confidence the test controls without depending on which id is drawn. Every call's inputs are recorded."""

    def __init__(self, image_allowed, text_allowed=(), length_class=0, text_tokens=C, eos_at=None):
        super().__init__()
        self.cfg = types.SimpleNamespace(image_tokens=len(image_allowed), text_tokens=text_tokens)
        self.image_allowed, self.text_allowed = list(image_allowed), list(text_allowed)
        self.length_class, self.eos_at = length_class, eos_at
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the stub a device
        self.calls: list[tuple[Inputs, bool]] = []

    @staticmethod
    def _uniform(allowed, b, vocab):
        logits = torch.full((b, len(allowed), vocab), float("-inf"))
        for k, a in enumerate(allowed):
            logits[:, k, 1:1 + a] = 0.0
        return logits

    def forward(self, x: Inputs, image_query=None, text_query=None, length=False) -> Outputs:
        self.calls.append((x, length))
        b, out = x.image.shape[0], Outputs()
        if image_query is not None:
            out.image_logits = self._uniform(self.image_allowed, b, VI)[image_query]
        if text_query is not None:
            logits = self._uniform(self.text_allowed[: x.text.shape[1]], b, VT)  # samplers may drop pad columns
            if self.eos_at is not None and self.eos_at < x.text.shape[1]:  # this position can only be EOS
                logits[:, self.eos_at] = float("-inf")
                logits[:, self.eos_at, EOS] = 0.0
            out.text_logits = logits[text_query]
        if length:
            out.length_logits = torch.nn.functional.one_hot(torch.full((b,), self.length_class), self.cfg.text_tokens
                                                            ).float()
        return out


# ---- schedules and pure helpers ----

def test_unmask_counts_match_the_reference_table():
    counts = unmask_counts(256, 10, "cosine")
    assert counts == [3, 9, 15, 21, 26, 31, 34, 37, 39, 41]  # kakaobrain/magvlt `sample_t2i`
    remaining = [256 - sum(counts[: t + 1]) for t in range(10)]
    assert remaining == [253, 244, 229, 208, 182, 151, 117, 80, 41, 0]


def test_unmask_counts_hand_cases():
    # linear, 10 tokens, 4 steps: keep ceil(0.75*10)=8, 5, ceil(2.5)=3, then all -> unmask 2, 3, 2, 3
    assert unmask_counts(10, 4, "linear") == [2, 3, 2, 3]
    # cosine, 8 tokens, 4 steps: keep ceil(7.39)=8 -> forced 1; ceil(5.66)=6 -> 1; ceil(3.06)=4 -> 2; last 4
    assert unmask_counts(8, 4, "cosine") == [1, 1, 2, 4]
    # fewer tokens than steps: one per step until none is left
    assert unmask_counts(2, 4, "cosine") == [1, 1, 0, 0]
    assert unmask_counts(5, 1, "sqrt") == [5]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "sqrt"])
@pytest.mark.parametrize("total,steps", [(256, 10), (64, 10), (255, 12), (13, 12), (1000, 7), (1, 1)])
def test_unmask_counts_cover_everything_with_one_per_step(schedule, total, steps):
    counts = unmask_counts(total, steps, schedule)
    assert len(counts) == steps and sum(counts) == total
    left = [total - sum(counts[:t]) for t in range(steps)]  # masked before each step
    assert all(n >= min(1, before) for n, before in zip(counts[:-1], left))  # >= 1 while any is left
    assert all(n >= 0 for n in counts)


def test_unmask_table_rows_are_the_per_total_counts():
    totals = torch.tensor([256, 64, 0, 5])
    table = unmask_table(totals, 10, "cosine")
    for row, total in zip(table.tolist(), totals.tolist()):
        assert row == unmask_counts(total, 10, "cosine")


def test_infill_span_and_center_box_hand_cases():
    assert infill_span(10) == (3, 5)
    assert infill_span(7) == (2, 3)
    assert infill_span(1) == (0, 0)
    box = center_box(16).view(16, 16)
    assert box.sum() == 64  # 25% of the tokens (MAGVLT §4.2: the central 8 x 8)
    rows, cols = box.nonzero(as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 11, 4, 11)


def test_config_rejects_unknown_rules():
    with pytest.raises(ValueError):
        MAGVLTSampling(unmask="greedy")
    with pytest.raises(ValueError):
        MAGVLTSampling(text_remask="bottom")
    with pytest.raises(ValueError):
        MAGVLTSampling(image_steps=0)


# ---- images ----

def captions(b=3):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VT - 1, (b, C), generator=g), torch.tensor([3, 8, 5])[:b]


def test_t2i_is_valid_and_deterministic_for_a_seed():
    model, (text, text_len) = tiny(), captions()
    a = generate_images(model, text, text_len, MAGVLTSampling(), torch.Generator().manual_seed(0))
    b = generate_images(model, text, text_len, MAGVLTSampling(), torch.Generator().manual_seed(0))
    assert a.shape == (3, N) and a.dtype == torch.long
    assert ((a >= 0) & (a < VI)).all()
    assert torch.equal(a, b)
    assert not model.training


def test_t2i_fills_every_position_and_unmasks_by_confidence():
    # Confidence of position k = 1 / allowed[k]; with "maskgit" (no Gumbel) the most confident go first.
    allowed = [3, 1, 4, 8, 2, 6, 5, 7]
    stub = Stub(allowed)
    cfg = MAGVLTSampling(image_steps=4, unmask="maskgit")
    text, text_len = captions(2)
    codes = generate_images(stub, text, text_len, cfg, torch.Generator().manual_seed(0))
    assert (codes >= 1).all()  # no placeholder left: every position holds a sampled id
    assert all((codes[:, k] <= a).all() for k, a in enumerate(allowed))
    masks = [x.image_masked[0] for x, _ in stub.calls] + [torch.zeros(8, dtype=torch.bool)]
    assert [int(m.sum()) for m in masks] == [8, 7, 6, 4, 0]  # unmask 1, 1, 2, 4 (hand-computed above)
    order = torch.tensor(allowed)
    for before, after in zip(masks, masks[1:]):
        opened = before & ~after
        assert not (after & ~before).any()  # nothing is re-masked
        if after.any():
            assert order[opened].max() < order[after].min()


def test_inpainting_keeps_the_given_tokens():
    model = tiny()
    text, text_len = captions()
    g = torch.Generator().manual_seed(2)
    image = torch.randint(0, VI, (3, N), generator=g)
    masked = torch.zeros(3, N, dtype=torch.bool)
    masked[0] = center_box(4)
    masked[1, [0, 5, 15]] = True  # rows have different masked counts; row 2 has none
    out = generate_images(model, text, text_len, MAGVLTSampling(), torch.Generator().manual_seed(0), image=image,
                          masked=masked)
    assert torch.equal(out[~masked], image[~masked])
    assert ((out >= 0) & (out < VI)).all()


def test_inpainting_schedules_each_rows_count():
    stub = Stub([2] * 8)
    masked = torch.zeros(2, 8, dtype=torch.bool)
    masked[0, :8], masked[1, :2] = True, True
    text, text_len = captions(2)
    generate_images(stub, text, text_len, MAGVLTSampling(image_steps=4), torch.Generator().manual_seed(0),
                    image=torch.zeros(2, 8, dtype=torch.long), masked=masked)
    counts = torch.stack([x.image_masked.sum(dim=1) for x, _ in stub.calls])  # (steps, B) masked before each step
    assert counts[:, 0].tolist() == [8, 7, 6, 4]  # unmask 1, 1, 2, (4)
    assert counts[:, 1].tolist() == [2, 1, 0, 0]  # unmask 1, 1, then nothing is left


# ---- text ----

def test_i2t_length_from_the_head_and_remask_counts():
    # Length class 4 -> N = 5; T = 4 -> n_t = max(1, floor(5 (4 - t) / 4)) = 5, 3, 2, 1.
    stub = Stub([1] * N, text_allowed=[3, 1, 4, 8, 2, 6, 5, 7], length_class=4)
    cfg = MAGVLTSampling(text_steps=4, text_remask="topk")
    image = torch.zeros(2, N, dtype=torch.long)
    result = generate_text(stub, image, cfg, torch.Generator().manual_seed(0), eos_id=EOS)
    (first, length_pass), *steps = stub.calls
    assert length_pass and first.text_masked.all() and (first.text_len == C).all()
    assert [int(x.text_masked[0].sum()) for x, _ in steps] == [5, 3, 2, 1]
    assert all((x.text_len == 5).all() and not x.text_masked[:, 5:].any() for x, _ in steps)
    # "topk" re-masks the lowest log-probs: after the first pass log p[k] = -log(allowed[k]) in the window
    # (allowed 3, 1, 4, 8, 2) -> the 3 lowest are positions 3, 2, 0.
    assert steps[1][0].text_masked[0].nonzero().flatten().tolist() == [0, 2, 3]
    # No EOS sampled: the 5 window tokens, then the EOS padding at position 5 -> length 6.
    assert (result.lengths == 6).all()
    assert (result.ids[:, 5:] == EOS).all() and (result.ids[:, :5] != EOS).all()
    expected = -sum(math.log(a) for a in [3, 1, 4, 8, 2])  # uniform over allowed[k] tokens
    assert torch.allclose(result.logprob, torch.full((2,), expected))


def test_i2t_cuts_at_the_first_generated_eos():
    stub = Stub([1] * N, text_allowed=[3] * C, length_class=6, eos_at=2)
    result = generate_text(stub, torch.zeros(1, N, dtype=torch.long), MAGVLTSampling(text_steps=3),
                           torch.Generator().manual_seed(0), eos_id=EOS)
    assert result.lengths.tolist() == [3]
    assert (result.ids[0, 2:] == EOS).all() and (result.ids[0, :2] != EOS).all()
    assert torch.allclose(result.logprob, torch.tensor([-2 * math.log(3)]))  # EOS had probability 1


def test_i2t_with_a_real_model_is_valid():
    model = tiny()
    image = torch.randint(0, VI, (3, N), generator=torch.Generator().manual_seed(3))
    r = generate_text(model, image, MAGVLTSampling(), torch.Generator().manual_seed(0), eos_id=EOS)
    assert r.ids.shape == (3, C) and ((r.ids >= 0) & (r.ids < VT)).all()
    assert ((r.lengths >= 1) & (r.lengths <= C)).all()
    positions = torch.arange(C)
    assert (r.ids[positions >= r.lengths.unsqueeze(1)] == EOS).all()
    assert (r.logprob <= 0).all()


def test_infilling_changes_only_the_span():
    model = tiny()
    with torch.no_grad():  # EOS is the likeliest text id: only the ban keeps it out of the span
        model.head.bias[VI + EOS] = 1e4
    g = torch.Generator().manual_seed(4)
    text = torch.full((2, C), EOS)
    text[0, :6] = torch.randint(0, EOS, (6,), generator=g)  # n = 6 non-EOS tokens -> span [2, 5)
    text[1, :7] = torch.randint(0, EOS, (7,), generator=g)  # n = 7 -> span [2, 5)
    masked = torch.zeros(2, C, dtype=torch.bool)
    for row, n in enumerate((6, 7)):
        start, count = infill_span(n)
        masked[row, start:start + count] = True
    image = torch.randint(0, VI, (2, N), generator=g)
    r = generate_text(model, image, MAGVLTSampling(), torch.Generator().manual_seed(0), eos_id=EOS, text=text,
                      masked=masked)
    assert torch.equal(r.ids[~masked], text[~masked])
    assert r.lengths.tolist() == [7, 8]  # the true lengths (EOS included; the 7-token row has its EOS at 7)
    assert not torch.equal(r.ids[masked], text[masked])  # something was sampled there


# ---- unconditional pairs ----

def test_pairs_are_valid_and_lengths_in_range():
    model = tiny()
    codes, r = generate_pairs(model, 3, MAGVLTSampling(), torch.Generator().manual_seed(0), eos_id=EOS,
                              length_range=(2, 5))
    assert codes.shape == (3, N) and ((codes >= 0) & (codes < VI)).all()
    assert ((r.ids >= 0) & (r.ids < VT)).all()
    assert ((r.lengths >= 1) & (r.lengths <= C)).all()
    codes, r = generate_pairs(model, 2, MAGVLTSampling(image_steps=2, text_steps=2), torch.Generator().manual_seed(1),
                              eos_id=EOS, length_range=(50, 100))  # clamped to the context
    assert ((r.lengths >= 1) & (r.lengths <= C)).all()


def test_pairs_follow_the_length_head_and_fill_everything():
    # The window starts at 2 and the head then says 5: the grown positions start masked and are all filled.
    stub = Stub([2] * 8, text_allowed=[3] * C, length_class=4)
    codes, r = generate_pairs(stub, 2, MAGVLTSampling(image_steps=3, text_steps=3), torch.Generator().manual_seed(0),
                              eos_id=EOS, length_range=(2, 2))
    steps = [x for x, is_length in stub.calls if not is_length]
    assert len(steps) == 3
    assert (steps[0].text_len == 2).all() and (steps[1].text_len == 5).all()
    assert steps[1].text_masked[:, 2:5].all()  # newly exposed positions start masked
    assert (codes >= 1).all()
    assert r.lengths.tolist() == [6, 6] and (r.ids[:, :5] != EOS).all()


# ---- joint inpainting + infilling ----

def joint_inputs(b: int = 3):
    """(B, N) codes, a region per row (the centre, three tokens, none), (B, C) captions of 6, 7 and 5 tokens + EOS and
    a span per row (the infilling span, the last two words, none)."""
    g = torch.Generator().manual_seed(7)
    image = torch.randint(0, VI, (b, N), generator=g)
    region = torch.zeros(b, N, dtype=torch.bool)
    region[0], region[1, [0, 5, 15]] = center_box(4), True
    text, span = torch.full((b, C), EOS), torch.zeros(b, C, dtype=torch.bool)
    for row, n in enumerate((6, 7, 5)):
        text[row, :n] = torch.randint(0, EOS, (n,), generator=g)
    start, count = infill_span(6)
    span[0, start:start + count], span[1, 5:7] = True, True
    return image, region, text, span


def test_joint_keeps_the_given_tokens_and_never_draws_eos_in_the_span():
    model = tiny()
    with torch.no_grad():  # EOS is the likeliest text id: only the ban keeps the span from ending the caption
        model.head.bias[VI + EOS] = 1e4
    image, region, text, span = joint_inputs()
    codes, r = generate_joint(model, image, region, text, span, MAGVLTSampling(), torch.Generator().manual_seed(0),
                              eos_id=EOS)
    assert torch.equal(codes[~region], image[~region]) and ((codes >= 0) & (codes < VI)).all()
    assert torch.equal(r.ids[~span], text[~span]) and (r.ids[span] != EOS).all()
    assert r.lengths.tolist() == [7, 8, 6]  # the true lengths, EOS included
    assert not torch.equal(r.ids[span], text[span]) and not torch.equal(codes[region], image[region])


def test_joint_fills_every_masked_token_and_queries_both_modalities_at_each_step():
    # The stub never draws the placeholder 0: a 0 left in the region or the span would be a token never filled.
    stub = Stub([2] * N, text_allowed=[3] * C)
    image, region, text, span = joint_inputs()
    image, text = image.masked_fill(region, 0), text.masked_fill(span, 0)
    codes, r = generate_joint(stub, image, region, text, span, MAGVLTSampling(image_steps=3, text_steps=4),
                              torch.Generator().manual_seed(0), eos_id=EOS)
    assert (codes[region] >= 1).all() and (r.ids[span] >= 1).all()
    calls = [x for x, _ in stub.calls]
    assert len(calls) == 4 and all(x.layout == "i2t" for x in calls)  # T = max(3, 4) joint passes
    assert torch.equal(calls[0].image_masked, region) and torch.equal(calls[0].text_masked, span[:, :8])
    assert all(not (x.text_masked & ~span[:, :x.text.shape[1]]).any() for x in calls)  # text re-masks stay in the span
    table = unmask_table(region.sum(dim=1), 4, "cosine")  # (B, T): the image schedule stretched over the 4 passes
    masked = torch.stack([x.image_masked.sum(dim=1) for x in calls], dim=1)  # (B, T) masked before each pass
    assert torch.equal(masked, region.sum(dim=1, keepdim=True) - table.cumsum(dim=1) + table)


def test_joint_with_an_empty_region_is_infilling_bit_for_bit():
    model = tiny()
    image, _, text, span = joint_inputs()
    none = torch.zeros(3, N, dtype=torch.bool)
    for cfg in (MAGVLTSampling(), MAGVLTSampling(image_steps=5, text_steps=5, text_remask="topk")):
        codes, joint = generate_joint(model, image, none, text, span, cfg, torch.Generator().manual_seed(3), eos_id=EOS)
        alone = generate_text(model, image, cfg, torch.Generator().manual_seed(3), eos_id=EOS, text=text, masked=span)
        assert torch.equal(codes, image)
        assert all(torch.equal(getattr(joint, f), getattr(alone, f)) for f in ("ids", "lengths", "logprob"))


def test_joint_with_an_empty_span_unmasks_the_region_as_inpainting_does():
    # Distinct confidences and the noiseless "maskgit" rule make the order of unmasking deterministic.
    allowed = [3, 1, 4, 8, 2, 6, 5, 7, 9, 10, 11, 12, 2, 3, 4, 5]
    cfg = MAGVLTSampling(image_steps=3, text_steps=5, unmask="maskgit")
    image, region, text, _ = joint_inputs()
    joint, alone = Stub(allowed, text_allowed=[3] * C), Stub(allowed)
    codes, r = generate_joint(joint, image, region, text, torch.zeros(3, C, dtype=torch.bool), cfg,
                              torch.Generator().manual_seed(0), eos_id=EOS)
    inpainted = generate_images(alone, text, window_lengths(text, EOS), dataclasses.replace(cfg, image_steps=5),
                                torch.Generator().manual_seed(0), image=image, masked=region)  # T = max(3, 5)
    assert torch.equal(r.ids, text) and torch.equal(codes[~region], image[~region])
    assert len(joint.calls) == len(alone.calls) == 4  # unmask 1, 1, 1, 1, (0): a pass per step until none is left
    assert all(torch.equal(a.image_masked, b.image_masked) for (a, _), (b, _) in zip(joint.calls, alone.calls))
    assert (inpainted[region] >= 1).all() and (codes[region] >= 1).all()


# ---- blending ----

def test_blend_is_generated_inside_and_source_outside():
    b, grid, size = 2, 8, 64  # default radius 64 / 16 - 1 = 3 px; the box is pixels 16..47
    edited = center_box(grid).expand(b, -1)
    out = blend(torch.ones(b, 3, size, size), torch.zeros(b, 3, size, size), edited, grid)
    assert torch.allclose(out[..., 28:36, 28:36], torch.ones(1), atol=1e-4)  # >= 12 px (4 sigma) inside
    assert torch.allclose(out[..., :4, :], torch.zeros(1), atol=1e-4)
    assert 0.2 < out[0, 0, 32, 16] < 0.8  # the edge is soft
    hard = blend(torch.ones(b, 3, size, size), torch.zeros(b, 3, size, size), edited, grid, radius=0)
    assert hard[0, 0, 16:48, 16:48].eq(1).all() and hard.sum() == b * 3 * 32 * 32


# ---- classifier-free guidance ----

class Recorder(nn.Module):
    """A real model whose every call's inputs are recorded."""

    def __init__(self, model: MAGVLT):
        super().__init__()
        self.model, self.cfg, self.calls = model, model.cfg, []

    def forward(self, x: Inputs, **queries) -> Outputs:
        self.calls.append(x)
        return self.model(x, **queries)


def source_image() -> torch.Tensor:
    return torch.randint(0, VI, (3, N), generator=torch.Generator().manual_seed(3))


def sampler_runs(cfg: MAGVLTSampling, model: nn.Module):
    """T2I, inpainting, I2T and infilling with `cfg` and a seed each: every sampler that guidance applies to."""
    (text, text_len), image = captions(), source_image()
    span = torch.arange(C).expand(3, -1) < 2
    seed = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    return [generate_images(model, text, text_len, cfg, seed()),
            generate_images(model, text, text_len, cfg, seed(), image=image, masked=center_box(4).expand(3, -1)),
            generate_text(model, image, cfg, seed(), eos_id=EOS).ids,
            generate_text(model, image, cfg, seed(), eos_id=EOS, text=text, masked=span).ids]


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_guidance_0_is_the_unguided_sampler_bitwise(schedule):
    plain, zero = Recorder(tiny()), Recorder(tiny())
    expected = sampler_runs(MAGVLTSampling(), plain)
    got = sampler_runs(MAGVLTSampling(guidance=0.0, guidance_schedule=schedule), zero)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert all(len(x.text_len) == 3 for x in zero.calls)  # no pass of 2B rows
    assert len(zero.calls) == len(plain.calls)


def hand_null(x: Inputs) -> Inputs:
    """The null condition built by hand: the empty caption (EOS, EOS padding, text_len 1) or the all-masked image."""
    if x.layout == "t2i":
        return dataclasses.replace(x, text=torch.full_like(x.text, EOS), text_len=torch.ones_like(x.text_len))
    return dataclasses.replace(x, image_masked=torch.ones_like(x.image_masked))


@pytest.mark.parametrize("layout", ["t2i", "i2t"])
def test_the_2b_row_pass_is_c_plus_w_c_minus_u_of_two_passes(layout):
    model, (text, text_len) = tiny(), captions()
    g = torch.Generator().manual_seed(6)
    image = torch.randint(0, VI, (3, N), generator=g)
    image_masked = torch.rand(3, N, generator=g) < (0.5 if layout == "t2i" else 0.0)
    text_masked = (torch.rand(3, C, generator=g) < (0.0 if layout == "t2i" else 0.5)) & (
        torch.arange(C) < text_len.unsqueeze(1))
    x = Inputs(layout, image, image_masked, text, text_masked, text_len)
    query = image_masked if layout == "t2i" else text_masked
    pick = (lambda out: out.image_logits) if layout == "t2i" else (lambda out: out.text_logits)  # noqa: E731
    kind = "image_query" if layout == "t2i" else "text_query"
    with torch.no_grad():
        c, u = (pick(model(inputs, **{kind: query})) for inputs in (x, hand_null(x)))
        guided = guided_logits(model, x, query, 2.5)
    assert guided.dtype == torch.float32
    assert guided.shape == c.shape == (int(query.sum()), VI if layout == "t2i" else VT)
    torch.testing.assert_close(guided, c + 2.5 * (c - u), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(guided_logits(model, x, query, 0.0), c)  # w = 0: the conditional pass itself


def test_guided_samplers_run_one_pass_of_2b_rows_with_the_null_condition_second():
    model = Recorder(tiny())
    codes, inpainted, caps, _ = sampler_runs(MAGVLTSampling(guidance=3.0, guidance_schedule="linear"), model)
    assert ((codes >= 0) & (codes < VI)).all() and ((caps >= 0) & (caps < VT)).all()
    outside = ~center_box(4)
    assert torch.equal(inpainted[:, outside], source_image()[:, outside])
    guided = [x for x in model.calls if len(x.text_len) == 6]
    assert len(guided) == len(model.calls) - 1  # all but the I2T length pass, which reads the conditional rows only
    fields = ("image", "image_masked", "text", "text_masked", "text_len")
    for x in guided:
        cond, null = (Inputs(x.layout, *(getattr(x, f)[rows] for f in fields)) for rows in (slice(0, 3), slice(3, 6)))
        assert all(torch.equal(getattr(null, f), getattr(hand_null(cond), f)) for f in fields)


def test_guidance_scales_constant_and_linear_ramp():
    assert guidance_scales(3.0, 4, "constant") == [3.0, 3.0, 3.0, 3.0]
    assert guidance_scales(3.0, 4, "linear") == [0.75, 1.5, 2.25, 3.0]  # w (t + 1) / T
    assert guidance_scales(2.0, 1, "linear") == [2.0]
    assert guidance_scales(0.0, 3, "linear") == [0.0, 0.0, 0.0]


def test_the_samplers_use_the_ramp_one_scale_per_step(monkeypatch):
    seen: list[float] = []

    def recording(model, x, query, w):
        seen.append(w)
        return guided_logits(model, x, query, 0.0)

    monkeypatch.setattr(magvlt_sampling, "guided_logits", recording)
    model, (text, text_len) = tiny(), captions()
    cfg = MAGVLTSampling(guidance=2.0, guidance_schedule="linear", image_steps=4, text_steps=5)
    generate_images(model, text, text_len, cfg, torch.Generator().manual_seed(0))
    assert seen == [0.5, 1.0, 1.5, 2.0]
    seen.clear()
    generate_text(model, torch.zeros(3, N, dtype=torch.long), cfg, torch.Generator().manual_seed(0), eos_id=EOS,
                  length=torch.tensor([5, 5, 5]))
    assert seen == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0])


def test_guidance_config_errors_are_one_line():
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        MAGVLTSampling(guidance=-1.0)
    with pytest.raises(ValueError, match="guidance_schedule"):
        MAGVLTSampling(guidance_schedule="cosine")
    with pytest.raises(VltkError, match="guidance must be >= 0") as err:
        load_config(SampleConfig, overrides=["magvlt.guidance=-1"])
    assert "\n" not in str(err.value)
    with pytest.raises(VltkError, match="unconditional"):
        load_config(SampleConfig, overrides=["task=it2it", "magvlt.guidance=2"])
