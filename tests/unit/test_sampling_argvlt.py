"""ARGVLT's KV-cache samplers: the default filters (magvlt feat/eval), shapes and ranges, determinism, the number of
model steps, early stop on EOS, greedy decoding against a full (uncached) forward, AR inpainting's permutation, and
classifier-free guidance through one cache of 2B rows (w = 0 bitwise unguided; every step's logits against full
forwards of the 2B rows and of c and u apart)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vltk.config import load_config
from vltk.errors import VltkError
from vltk.models.argvlt import ARGVLT, ARGVLTConfig
from vltk.models.magvlt import BOI, BOT
from vltk.pipeline.sample import SampleConfig
from vltk.sampling import argvlt as ar_sampling
from vltk.sampling.argvlt import ARGVLTSampling, generate_images, generate_text, inpaint, known_first
from vltk.sampling.common import guidance_scales, guide

IMAGE_VOCAB, TEXT_VOCAB, N, C = 16, 24, 6, 5
EOS = TEXT_VOCAB - 1
TINY = ARGVLTConfig(width=16, depth=2, heads=2, dropout=0.0, attn_dropout=0.0, image_vocab=IMAGE_VOCAB,
                    text_vocab=TEXT_VOCAB, image_tokens=N, text_tokens=C)
GREEDY = ARGVLTSampling(image_top_k=1, text_top_k=1)


@pytest.fixture
def model() -> ARGVLT:
    """A random model whose greedy outputs depend on its inputs: at the init's std 0.02 it decodes nearly the same
    tokens whatever it is fed, so the weights are scaled up."""
    torch.manual_seed(1)
    model = ARGVLT(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20)
    return model


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def captions(b: int) -> torch.Tensor:
    """(b, C) EOS-padded rows of different lengths."""
    text = torch.randint(EOS, (b, C), generator=seeded(1))
    return text.masked_fill(torch.arange(C) >= torch.arange(b).remainder(C).add(1).unsqueeze(1), EOS)


def codes(b: int) -> torch.Tensor:
    return torch.randint(IMAGE_VOCAB, (b, N), generator=seeded(2))


def spy(monkeypatch: pytest.MonkeyPatch, model: ARGVLT) -> list[dict]:
    """Record every `model.step` call's fed ids and image position ids, then run the real step."""
    calls, real = [], model.step

    def step(cache, order, ids, *, image_positions=None):
        calls.append({"ids": ids.clone(), "image_positions": image_positions})
        return real(cache, order, ids, image_positions=image_positions)

    monkeypatch.setattr(model, "step", step)
    return calls


def test_defaults_are_the_references():
    cfg = ARGVLTSampling()
    assert (cfg.image_temperature, cfg.image_top_k, cfg.image_top_p) == (1.0, 256, None)
    assert (cfg.text_temperature, cfg.text_top_k, cfg.text_top_p) == (0.5, 32, None)
    with pytest.raises(ValueError, match="temperature"):
        ARGVLTSampling(text_temperature=0.0)


def test_known_first_by_hand():
    masked = torch.tensor([[0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.bool)
    assert known_first(masked).tolist() == [[0, 2, 1, 3], [0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 0, 3]]


# ---- text to image -------------------------------------------------------------------------------------------------

def test_images_shape_range_determinism_and_exactly_n_steps(model, monkeypatch):
    text = captions(3)
    calls = spy(monkeypatch, model)
    first = generate_images(model, text, ARGVLTSampling(), seeded(5))
    assert first.shape == (3, N) and first.dtype == torch.long
    assert 0 <= first.min() and first.max() < IMAGE_VOCAB
    assert len(calls) == N  # the prefix block, then one step per code but the last
    assert calls[0]["ids"].tolist() == [[BOT, *row, BOI] for row in text.tolist()]
    assert [call["ids"].shape for call in calls[1:]] == [(3, 1)] * (N - 1)
    assert torch.equal(generate_images(model, text, ARGVLTSampling(), seeded(5)), first)
    assert not torch.equal(generate_images(model, text, ARGVLTSampling(), seeded(6)), first)


def test_greedy_images_are_the_argmax_of_a_full_forward(model):
    text = captions(3)
    image = generate_images(model, text, GREEDY, None)
    logits = model("t2i", image, text, image_query=torch.ones_like(image, dtype=torch.bool)).image_logits
    assert torch.equal(logits.view(3, N, IMAGE_VOCAB).argmax(-1), image)


# ---- image to text -------------------------------------------------------------------------------------------------

def test_text_shape_range_padding_and_determinism(model):
    image = codes(4)
    ids, lengths = generate_text(model, image, ARGVLTSampling(), seeded(3), eos_id=EOS)
    assert ids.shape == (4, C) and lengths.shape == (4,)
    assert 0 <= ids.min() and ids.max() < TEXT_VOCAB
    for row, n in zip(ids.tolist(), lengths.tolist()):
        assert 1 <= n <= C and EOS not in row[:n - 1]  # n_txt counts up to and including the first EOS
        assert row[n - 1:] == [EOS] * (C - n + 1) or (n == C and EOS not in row)
    again = generate_text(model, image, ARGVLTSampling(), seeded(3), eos_id=EOS)
    assert torch.equal(again[0], ids) and torch.equal(again[1], lengths)


def forced_step(calls: list[int]):
    """A stand-in for `model.step` whose next text token is fixed: after the prefix [BOI, image, BOT], the last image
    code (as a text id); after a text token t, t + 1."""

    def step(cache, order, ids, *, image_positions=None):
        calls.append(ids.shape[0])
        following = ids[:, -2] if ids.shape[1] > 1 else ids[:, -1] + 1
        return 50.0 * F.one_hot(following, TEXT_VOCAB).float()

    return step


def test_text_stops_once_every_row_has_drawn_eos(model, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(model, "step", forced_step(calls))
    image = torch.zeros(3, N, dtype=torch.long)
    image[:, -1] = torch.tensor([10, 12, 11])
    ids, lengths = generate_text(model, image, GREEDY, None, eos_id=12)  # eos_id is the caller's, not V - 1
    # Row 0 draws 10, 11, 12; row 1 draws 12 at once; row 2 draws 11, 12. Finished rows leave the batch.
    assert ids.tolist() == [[10, 11, 12, 12, 12], [12] * 5, [11, 12, 12, 12, 12]]
    assert lengths.tolist() == [3, 1, 2]
    assert calls == [3, 2, 1]  # three draws, not C: the batch shrinks as rows finish


def test_text_without_eos_runs_c_steps(model, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(model, "step", forced_step(calls))
    image = torch.zeros(2, N, dtype=torch.long)
    image[:, -1] = torch.tensor([0, 3])
    ids, lengths = generate_text(model, image, GREEDY, None, eos_id=EOS)
    assert ids.tolist() == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]]
    assert lengths.tolist() == [C, C] and calls == [2] * C


def test_greedy_text_is_the_argmax_of_a_full_forward_and_truncates_at_eos(model):
    image = codes(4)
    never = -1  # no token equals it: every row runs C steps
    ids, lengths = generate_text(model, image, GREEDY, None, eos_id=never)
    assert lengths.tolist() == [C] * 4
    logits = model("i2t", image, ids, text_query=torch.ones_like(ids, dtype=torch.bool)).text_logits
    assert torch.equal(logits.view(4, C, TEXT_VOCAB).argmax(-1), ids)
    # With a token the rows draw as EOS, each row is its own greedy path cut after the first EOS (rows leaving the
    # cache must not disturb the others), then EOS-padded.
    eos = ids[0, 1].item()
    cut, cut_lengths = generate_text(model, image, GREEDY, None, eos_id=eos)
    for row, got, n in zip(ids.tolist(), cut.tolist(), cut_lengths.tolist()):
        first = row.index(eos) + 1 if eos in row else C
        assert n == first and got == row[:first] + [eos] * (C - first)
    assert cut_lengths[0] == 2 and len(set(cut_lengths.tolist())) > 1  # rows stop at different steps


# ---- inpainting ----------------------------------------------------------------------------------------------------

MASKED = torch.tensor([[0, 1, 0, 0, 1, 0], [1, 1, 0, 1, 1, 1], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)


def test_inpaint_feeds_known_tokens_first_with_their_positions(model, monkeypatch):
    image, text = codes(3), captions(3)
    calls = spy(monkeypatch, model)
    out = inpaint(model, image, MASKED, text, ARGVLTSampling(), seeded(4))
    assert torch.equal(out[~MASKED], image[~MASKED]) and out.max() < IMAGE_VOCAB
    # Slot orders written out: known raster positions, then masked ones. Row 1 knows one token, so one image slot
    # goes with the prefix and N - 1 steps follow.
    order = [[0, 2, 3, 5, 1, 4], [2, 0, 1, 3, 4, 5], [0, 1, 2, 4, 5, 3]]
    assert len(calls) == N - 1
    assert all(call["image_positions"].tolist() == order for call in calls)
    assert calls[0]["ids"].tolist() == [[BOT, *t, BOI, image[b, order[b][0]].item()] for b, t in
                                        enumerate(text.tolist())]
    # Slot j (1 .. N - 2) is fed the code of raster position order[b][j]: the known one or the one drawn for it.
    fed = torch.cat([call["ids"] for call in calls[1:]], dim=1)  # (3, N - 2)
    assert fed.tolist() == [[out[b, p].item() for p in order[b][1:-1]] for b in range(3)]


def test_greedy_inpaint_is_the_argmax_of_a_full_forward_in_slot_order(model):
    image, text = codes(3), captions(3)
    out = inpaint(model, image, MASKED, text, GREEDY, None)
    slots = known_first(MASKED)
    fed = out.gather(1, slots)  # (3, N): the codes in slot order
    logits = model("t2i", fed, text, image_query=torch.ones_like(fed, dtype=torch.bool), image_positions=slots)
    predicted = logits.image_logits.view(3, N, IMAGE_VOCAB).argmax(-1)
    generated = MASKED.gather(1, slots)
    assert torch.equal(predicted[generated], fed[generated])


def test_inpaint_with_nothing_masked_is_the_identity(model, monkeypatch):
    image = codes(2)
    calls = spy(monkeypatch, model)
    out = inpaint(model, image, torch.zeros_like(image, dtype=torch.bool), captions(2), ARGVLTSampling(), None)
    assert torch.equal(out, image) and calls == []


# ---- classifier-free guidance --------------------------------------------------------------------------------------

NULL_IMAGE = IMAGE_VOCAB + TEXT_VOCAB - 2  # the text vocabulary's SOT row, in every image slot of the null image


def recorded_draws(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record the (b', V) logits every draw of the samplers reads (the guided ones when guided), then draw."""
    seen, real = [], ar_sampling.draw

    def recording(logits, *args):
        seen.append(logits.clone())
        return real(logits, *args)

    monkeypatch.setattr(ar_sampling, "draw", recording)
    return seen


def all_samplers(model: ARGVLT, cfg: ARGVLTSampling) -> list[torch.Tensor]:
    """T2I, inpainting and I2T with `cfg` and a seed each: every sampler guidance applies to."""
    text, image = captions(3), codes(3)
    return [generate_images(model, text, cfg, seeded(5)), inpaint(model, image, MASKED, text, cfg, seeded(5)),
            *generate_text(model, image, cfg, seeded(5), eos_id=EOS)]


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_guidance_0_is_the_unguided_sampler_bitwise_with_no_2b_rows(model, monkeypatch, schedule):
    expected = all_samplers(model, ARGVLTSampling())
    calls = spy(monkeypatch, model)
    got = all_samplers(model, ARGVLTSampling(guidance=0.0, guidance_schedule=schedule))
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert all(call["ids"].shape[0] <= 3 for call in calls)  # never the null rows


def test_guided_caches_hold_the_rows_then_their_null_rows(model, monkeypatch):
    text, image = captions(3), codes(3)
    calls = spy(monkeypatch, model)
    generate_images(model, text, ARGVLTSampling(guidance=2.0), seeded(0))
    assert calls[0]["ids"].tolist() == [[BOT, *row, BOI] for row in text.tolist()] + [[BOT, *[EOS] * C, BOI]] * 3
    assert all(torch.equal(call["ids"][:3], call["ids"][3:]) for call in calls[1:])  # one drawn code, both rows
    calls.clear()
    out = inpaint(model, image, MASKED, text, ARGVLTSampling(guidance=2.0), seeded(0))
    assert torch.equal(out[~MASKED], image[~MASKED])
    assert torch.equal(calls[0]["ids"][3:, C + 2:], calls[0]["ids"][:3, C + 2:])  # the null rows know the same codes
    assert all(torch.equal(call["image_positions"][:3], call["image_positions"][3:]) for call in calls)
    calls.clear()
    generate_text(model, image, ARGVLTSampling(guidance=2.0), seeded(0), eos_id=-1)
    null_prefix = [BOI, *[NULL_IMAGE] * N, BOT]
    assert calls[0]["ids"].tolist() == [[BOI, *row, BOT] for row in image.tolist()] + [null_prefix] * 3


def null_condition(order: str, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The null condition written out: the empty caption (all EOS) or the null image (SOT's row in every slot)."""
    if order == "t2i":
        return image, torch.full_like(text, EOS)
    return torch.full_like(image, NULL_IMAGE), text


def full_logits(model: ARGVLT, order: str, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(B, N or C, V) logits of every generated token of `order` from one forward without a cache."""
    if order == "t2i":
        return model(order, image, text, image_query=torch.ones_like(image, dtype=torch.bool)).image_logits.view(
            image.shape[0], N, IMAGE_VOCAB)
    return model(order, image, text, text_query=torch.ones_like(text, dtype=torch.bool)).text_logits.view(
        image.shape[0], C, TEXT_VOCAB)


@pytest.mark.parametrize("order", ["t2i", "i2t"])
@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_guided_cache_decoding_is_c_plus_w_c_minus_u_of_full_forwards_at_every_step(model, monkeypatch, order,
                                                                                     schedule):
    w, b = 2.5, 4
    text, image = captions(b), codes(b)
    cfg = ARGVLTSampling(guidance=w, guidance_schedule=schedule, image_top_k=None, text_top_k=1)
    if order == "i2t":  # greedy, so that an EOS some rows draw early is known beforehand: rows leave the cache
        eos = generate_text(model, image, cfg, None, eos_id=-1)[0][0, 1].item()
    seen = recorded_draws(monkeypatch)
    if order == "t2i":
        image = generate_images(model, text, cfg, seeded(7))
        live = [torch.arange(b)] * N
    else:
        text, lengths = generate_text(model, image, cfg, None, eos_id=eos)
        assert lengths[0] == 2 and len(set(lengths.tolist())) > 1  # rows finish at different steps
        live = [(lengths > k).nonzero().squeeze(1) for k in range(int(lengths.max()))]
    assert [s.shape[0] for s in seen] == [len(rows) for rows in live]
    scales = guidance_scales(w, N if order == "t2i" else C, schedule)
    null_image, null_text = null_condition(order, image, text)
    with torch.no_grad():
        both = full_logits(model, order, torch.cat([image, null_image]), torch.cat([text, null_text]))  # 2B rows
        c, u = full_logits(model, order, image, text), full_logits(model, order, null_image, null_text)
    # float32 rounding, which a cached block and a full forward sum in different orders: ~1e-6 of the largest logit
    # (~90 with the fixture's x20 weights), times the 1 + 2w that c + w (c - u) amplifies it by. A row of the wrong
    # sample or of the wrong condition is off by tens.
    atol = 1e-5 * float(both.abs().max()) * (1 + 2 * w)
    for k, (logits, rows) in enumerate(zip(seen, live)):
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, guide(both[:b][rows, k], both[b:][rows, k], scales[k]), rtol=0, atol=atol)
        torch.testing.assert_close(logits, c[rows, k] + scales[k] * (c[rows, k] - u[rows, k]), rtol=0, atol=atol)
        assert (logits - c[rows, k]).abs().max() > 100 * atol  # guidance changed them


def test_guidance_moves_the_samples(model):
    text = captions(3)
    plain = generate_images(model, text, ARGVLTSampling(), seeded(5))
    assert not torch.equal(generate_images(model, text, ARGVLTSampling(guidance=3.0), seeded(5)), plain)


def test_guidance_config_errors_are_one_line():
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        ARGVLTSampling(guidance=-1.0)
    with pytest.raises(ValueError, match="guidance_schedule"):
        ARGVLTSampling(guidance_schedule="cosine")
    with pytest.raises(VltkError, match="guidance must be >= 0") as err:
        load_config(SampleConfig, overrides=["argvlt.guidance=nan"])
    assert "\n" not in str(err.value)
