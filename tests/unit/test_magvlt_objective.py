"""MAGVLT's training objective against MAGVLT §3.1-3.5 and maskgit.py: tasks, masks, losses, UnrollMask and MixSel."""

from __future__ import annotations

import collections
import math

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from vltk.models.magvlt import BOG, BOTTOM, LEFT, MAGVLT, RIGHT, TOP, Inputs, MAGVLTConfig, drop_condition
from vltk.objectives.common import Draws
from vltk.objectives.magvlt import (
    MAGVLTObjective, MAGVLTTask, fill_predictions, image_half, length_classes, selector_tokens,
)
from vltk.text.bpe import BPETokenizer, text_lengths
from vltk.train import OptimConfig, prepare

GRID, C, VI, VT, B = 4, 8, 13, 9, 6
N = GRID * GRID
EOS, SEP = VT - 1, 3


def make_task(objective: MAGVLTObjective | None = None, seed: int = 0, width: int = 16, lr: float = 1e-2) -> MAGVLTTask:
    torch.manual_seed(0)
    model = MAGVLT(MAGVLTConfig(width=width, depth=1, heads=2, dropout=0.0, attn_dropout=0.0, image_vocab=VI,
                                text_vocab=VT, image_tokens=N, text_tokens=C))
    accelerator = Accelerator(cpu=True)
    parts = prepare(accelerator, {"model": (model, OptimConfig(lr=lr, warmup_steps=0, grad_clip=0))})
    return MAGVLTTask(parts, objective or MAGVLTObjective(), accelerator, global_batch=B, seed=seed, grid_size=GRID)


def caption(length: int, g: torch.Generator) -> torch.Tensor:
    """A MAGVLT row: length - 1 tokens (none of them EOS), then EOS, EOS-padded to C."""
    row = torch.full((C,), EOS)
    row[: length - 1] = torch.randint(0, EOS, (length - 1,), generator=g)
    return row


def make_batch(step: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([2, 3, 5, 8, 4, 6])
    a_len, b_len = torch.tensor([2, 3, 3, 2, 4, 2]), torch.tensor([3, 2, 3, 4, 2, 3])
    joined = torch.full((B, C), EOS)
    a_text, b_text = torch.stack([caption(int(n), g) for n in a_len]), torch.stack([caption(int(n), g) for n in b_len])
    a_span, b_span = torch.zeros(B, 2, dtype=torch.long), torch.zeros(B, 2, dtype=torch.long)
    for i in range(B):
        la, lb = int(a_len[i]) - 1, int(b_len[i]) - 1
        joined[i, :la], joined[i, la], joined[i, la + 1: la + 1 + lb] = a_text[i, :la], SEP, b_text[i, :lb]
        a_span[i], b_span[i] = torch.tensor([0, la]), torch.tensor([la + 1, la + 1 + lb])
    return {
        "index": torch.arange(B) + step * B,
        "image": torch.randint(0, VI, (B, N), generator=g),
        "text": torch.stack([caption(int(n), g) for n in lengths]),
        "text_len": lengths,
        "mix_image": torch.randint(0, VI, (B, N), generator=g),
        "mix_vertical": torch.tensor([True, False, True, False, True, False]),
        "a_image": torch.randint(0, VI, (B, N), generator=g), "b_image": torch.randint(0, VI, (B, N), generator=g),
        "a_text": a_text, "b_text": b_text, "a_len": a_len, "b_len": b_len,
        "joined_text": joined, "joined_len": a_len + b_len,  # (la + lb) tokens + SEP + EOS
        "a_span": a_span, "b_span": b_span,
    }


def draws(step: int = 0) -> Draws:
    return Draws(0, step, B, torch.arange(B), "cpu")


def test_task_ratio_is_8_1_1():
    task = make_task()
    counts = collections.Counter(task.draw_task(draws(step)) for step in range(5000))
    for name, p in zip(("t2i", "i2t", "it2it"), (0.8, 0.1, 0.1)):
        sigma = math.sqrt(5000 * p * (1 - p))
        assert abs(counts[name] - 5000 * p) < 4 * sigma, counts


def test_masks_follow_one_r_per_sample():
    task, batch = make_task(), make_batch()
    d = draws()
    r = d.uniform("ratio")
    for name in ("t2i", "i2t", "it2it"):
        p = task.plain_pass(batch, name, d)
        image_count = [max(1, math.ceil(math.cos(math.pi * float(x) / 2) * N)) for x in r]
        text_count = [min(int(n), max(1, math.ceil(float(x) * int(n)))) for x, n in zip(r, batch["text_len"])]
        if name != "i2t":
            assert p.image_loss.sum(1).tolist() == image_count
            assert (p.inputs.image_masked == p.image_loss).all()
        if name != "t2i":
            assert p.text_loss.sum(1).tolist() == text_count  # IT2IT: the same r, anti-correlated ratios
            assert not (p.text_loss & (torch.arange(C) >= batch["text_len"].unsqueeze(1))).any()  # pads never
        assert (p.inputs.layout == "t2i") == (name == "t2i")
        assert (p.length_target is None) == (name == "t2i")


def test_length_targets():
    # Class c means c + 1 tokens, EOS included; a caption cut without EOS (n_txt = C) is the last class.
    assert length_classes(torch.tensor([1, 5, 64, 65]), 64).tolist() == [0, 4, 63, 63]


def test_loss_is_smoothed_ce_on_masked_tokens_over_the_modalitys_vocabulary():
    task, batch = make_task(), make_batch()
    p = task.plain_pass(batch, "it2it", draws())
    model = task.parts["model"].module
    full = model(p.inputs, image_query=torch.ones(B, N, dtype=torch.bool),
                 text_query=torch.ones(B, C, dtype=torch.bool), length=True)
    image_logits, text_logits = full.image_logits.view(B, N, VI), full.text_logits.view(B, C, VT)
    image = F.cross_entropy(image_logits[p.image_loss], batch["image"][p.image_loss], label_smoothing=0.1)
    text = F.cross_entropy(text_logits[p.text_loss], batch["text"][p.text_loss], label_smoothing=0.1)
    length = F.cross_entropy(full.length_logits, batch["text_len"] - 1)
    stats: dict[str, float] = {}
    totals = torch.stack([c.float() for c in p.counts()])
    loss, _ = task.run_pass(p, totals, stats)
    assert loss.item() == pytest.approx((image + text + 0.01 * length).item(), rel=1e-5)
    assert stats["it2it/image"] == pytest.approx(image.item(), rel=1e-5)
    assert stats["it2it/length"] == pytest.approx(length.item(), rel=1e-5)


def test_unroll_remasks_inside_the_previous_mask_with_floor_counts():
    task, batch = make_task(MAGVLTObjective(unroll_prediction="argmax")), make_batch()
    d = draws()
    for name in ("t2i", "i2t"):
        main = task.plain_pass(batch, name, d)
        previous = main.image_loss if name == "t2i" else main.text_loss
        remask = task.unroll_mask(main, d)
        assert not (remask & ~previous).any()
        r = d.uniform("unroll/ratio")
        fraction = torch.cos(r * math.pi / 2) if name == "t2i" else r
        expected = [min(n, max(1, math.floor(float(f) * n))) for f, n in zip(fraction, previous.sum(1).tolist())]
        assert remask.sum(1).tolist() == expected
        # The second pass sees the first pass's argmax at M \ M', the truth elsewhere, and masks at M'.
        unroll = task.unroll_pass(main, remask)
        model = task.parts["model"].module
        out = model(main.inputs, image_query=main.image_loss, text_query=main.text_loss)
        task.fill_unroll(unroll, main, out, d)
        seen = unroll.inputs.image if name == "t2i" else unroll.inputs.text
        truth = batch["image"] if name == "t2i" else batch["text"]
        logits = out.image_logits if name == "t2i" else out.text_logits
        assert seen.grad_fn is None and not seen.is_floating_point()  # no gradient path through the guesses
        assert (seen[~previous] == truth[~previous]).all()
        assert (seen[previous] == logits.argmax(-1)).all()
        assert (unroll.image_target == batch["image"]).all() and (unroll.text_target == batch["text"]).all()
        loss_where = unroll.image_loss if name == "t2i" else unroll.text_loss
        assert (loss_where == remask).all()


def test_sampled_predictions_follow_the_softmax():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).repeat(20000, 1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    picks = fill_predictions(logits, 1.0, u)
    freq = torch.bincount(picks, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.015)
    assert (fill_predictions(logits[:5], 1.0, None) == 1).all()


def test_image_halves_and_selector_tokens():
    vertical, first = torch.tensor([False, False, True, True]), torch.tensor([True, False, True, False])
    halves = image_half(vertical, first, 4).view(4, 4, 4)
    cols, rows = torch.arange(4).view(1, 4), torch.arange(4).view(4, 1)
    assert (halves[0] == (cols < 2).expand(4, 4)).all()  # horizontal, A: left columns
    assert (halves[1] == (cols >= 2).expand(4, 4)).all()
    assert (halves[2] == (rows < 2).expand(4, 4)).all()  # vertical, A: top rows
    assert (halves[3] == (rows >= 2).expand(4, 4)).all()
    assert selector_tokens(vertical, first, by_image=True).tolist() == [LEFT, RIGHT, TOP, BOTTOM]
    assert selector_tokens(vertical, first, by_image=False).tolist() == [LEFT, RIGHT, LEFT, RIGHT]


def test_mixsel_targets_per_task():
    task, batch = make_task(), make_batch()
    d = draws()
    first = d.uniform("mixsel/target") < 0.5
    t2i = task.mixsel_pass(batch, "t2i", d)
    # T2I: both captions joined, the target image is the unmixed selected one, LEFT = the first caption.
    assert (t2i.inputs.text == batch["joined_text"]).all()
    assert (t2i.image_target == torch.where(first.unsqueeze(1), batch["a_image"], batch["b_image"])).all()
    assert t2i.inputs.selector.tolist() == [LEFT if f else RIGHT for f in first]
    assert t2i.weight == 0.5
    i2t = task.mixsel_pass(batch, "i2t", d)
    # I2T: the mixed image, the selected caption and its length; TOP/BOTTOM for vertical mixes.
    assert (i2t.inputs.image == batch["mix_image"]).all() and not i2t.inputs.image_masked.any()
    assert (i2t.text_target == torch.where(first.unsqueeze(1), batch["a_text"], batch["b_text"])).all()
    assert (i2t.length_target == torch.where(first, batch["a_len"], batch["b_len"]) - 1).all()
    expected = [(TOP if f else BOTTOM) if v else (LEFT if f else RIGHT) for f, v in zip(first, batch["mix_vertical"])]
    assert i2t.inputs.selector.tolist() == expected
    it2it = task.mixsel_pass(batch, "it2it", d)
    # IT2IT: masks only inside the selected half and the selected caption's span.
    half = image_half(batch["mix_vertical"], first, GRID)
    assert not (it2it.image_loss & ~half).any() and (it2it.image_loss.sum(1) >= 1).all()
    span = torch.where(first.unsqueeze(1), batch["a_span"], batch["b_span"])
    positions = torch.arange(C).unsqueeze(0)
    inside = (positions >= span[:, :1]) & (positions < span[:, 1:])
    assert not (it2it.text_loss & ~inside).any() and (it2it.text_loss.sum(1) >= 1).all()
    random = make_task(MAGVLTObjective(mixsel_select=False)).mixsel_pass(batch, "i2t", d)
    assert (random.inputs.selector == BOG).all()  # MixRandom: no selection token


def test_train_step_draws_do_not_depend_on_the_split():
    # Two micro-batches of 3 see exactly the masks the whole batch of 6 sees (keyed draws).
    task, batch = make_task(), make_batch(step=3)
    whole = Draws(0, 3, B, batch["index"] - 3 * B, "cpu")
    halves = [Draws(0, 3, B, batch["index"][s] - 3 * B, "cpu") for s in (slice(0, 3), slice(3, 6))]
    full = task.plain_pass(batch, "it2it", whole)
    parts = [task.plain_pass({k: v[s] for k, v in batch.items()}, "it2it", d)
             for s, d in zip((slice(0, 3), slice(3, 6)), halves)]
    assert (torch.cat([p.image_loss for p in parts]) == full.image_loss).all()
    assert (torch.cat([p.text_loss for p in parts]) == full.text_loss).all()


def test_training_lowers_the_loss_on_a_fixed_batch():
    task, batch = make_task(width=64, lr=3e-3), make_batch()
    part = task.parts["model"].module, task.parts["model"].optimizer

    def held_out_loss() -> float:  # every task's main pass at one fixed set of draws
        with torch.no_grad():
            passes = [task.plain_pass(batch, name, draws(10_000)) for name in ("t2i", "i2t", "it2it")]
            return sum(float(task.run_pass(p, torch.stack([c.float() for c in p.counts()]), {})[0]) for p in passes)

    before = held_out_loss()
    for step in range(60):
        batch["index"] = torch.arange(B) + step * B
        task.train_step(batch, step)
        part[1].step()
        part[1].zero_grad()
    assert held_out_loss() < 0.75 * before  # measured: 10.7 -> 7.0


# ---- condition dropout (classifier-free guidance's null condition) ----

def test_condition_dropout_rate_0_leaves_the_inputs_as_they_are():
    task, batch, d = make_task(), make_batch(), draws()
    t2i, i2t = task.plain_pass(batch, "t2i", d), task.plain_pass(batch, "i2t", d)
    assert torch.equal(t2i.inputs.text, batch["text"]) and torch.equal(t2i.inputs.text_len, batch["text_len"])
    assert not i2t.inputs.image_masked.any() and torch.equal(i2t.inputs.image, batch["image"])


def test_condition_dropout_rate_1_drops_every_condition_and_keeps_the_targets():
    task, batch, d = make_task(MAGVLTObjective(cond_dropout=1.0)), make_batch(), draws()
    plain = make_task().plain_pass(batch, "t2i", d)
    t2i = task.plain_pass(batch, "t2i", d)
    assert (t2i.inputs.text == EOS).all() and (t2i.inputs.text_len == 1).all()  # the empty caption, every row
    assert torch.equal(t2i.inputs.image_masked, plain.inputs.image_masked)  # the same masks: other draws untouched
    assert torch.equal(t2i.image_target, batch["image"])
    i2t = task.plain_pass(batch, "i2t", d)
    assert i2t.inputs.image_masked.all()  # the null image
    assert torch.equal(i2t.inputs.text, batch["text"]) and torch.equal(i2t.text_target, batch["text"])
    assert torch.equal(i2t.length_target, batch["text_len"] - 1)
    it2it = task.plain_pass(batch, "it2it", d)  # no condition: nothing to drop
    assert torch.equal(it2it.inputs.text_len, batch["text_len"]) and not it2it.inputs.image_masked.all()
    mixsel = task.mixsel_pass(batch, "t2i", d)  # keeps the captions its selection token points into
    assert torch.equal(mixsel.inputs.text, batch["joined_text"])
    unroll = task.unroll_pass(t2i, task.unroll_mask(t2i, d))  # the second pass of a dropped sample stays dropped
    assert (unroll.inputs.text == EOS).all() and (unroll.inputs.text_len == 1).all()
    assert math.isfinite(task.train_step(batch, 0)["loss"])


def test_the_empty_caption_is_what_the_tokenizer_makes_of_nothing():
    tokenizer = BPETokenizer([("a", "b</w>")], context_length=C)
    cfg = MAGVLTConfig(width=16, depth=1, heads=2, image_vocab=VI, text_vocab=tokenizer.vocab_size, image_tokens=N,
                       text_tokens=C)
    assert cfg.eos_id == tokenizer.eos_id  # EOT is the vocabulary's last id
    rows = torch.from_numpy(tokenizer.encode_batch(["ab", "a b ab"]).astype("int64"))
    x = Inputs("t2i", torch.zeros(2, N, dtype=torch.long), torch.ones(2, N, dtype=torch.bool), rows,
               torch.zeros_like(rows, dtype=torch.bool), torch.from_numpy(text_lengths(rows.numpy(), cfg.eos_id)))
    dropped = drop_condition(x, torch.tensor([True, False]), cfg.eos_id)
    empty = tokenizer.encode_batch([""])[0]
    assert dropped.text[0].tolist() == empty.tolist()
    assert int(dropped.text_len[0]) == text_lengths(empty[None], cfg.eos_id)[0] == 1
    assert torch.equal(dropped.text[1], rows[1]) and dropped.text_len[1] == x.text_len[1]


def test_condition_dropout_is_keyed_and_about_as_often_as_its_rate():
    task = make_task(MAGVLTObjective(cond_dropout=0.5))
    batch = make_batch()
    dropped = []
    for step in range(200):
        d = draws(step)
        again = task.plain_pass(batch, "t2i", draws(step)).inputs.text_len == 1  # the same key, the same rows
        first = task.plain_pass(batch, "t2i", d).inputs.text_len == 1
        assert torch.equal(first, again)
        dropped.append(first)
    share = float(torch.cat(dropped).float().mean())
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / (200 * B)), share
    assert 0 < torch.stack(dropped).sum(1).float().std()  # rows differ from step to step

    # One process with the whole global batch drops the same samples as two processes with half of it each.
    batch = make_batch(step=5)
    whole = task.plain_pass(batch, "i2t", Draws(0, 5, B, batch["index"] - 5 * B, "cpu"))
    halves = [task.plain_pass({k: v[s] for k, v in batch.items()}, "i2t",
                              Draws(0, 5, B, batch["index"][s] - 5 * B, "cpu")) for s in (slice(0, 3), slice(3, 6))]
    assert torch.equal(torch.cat([h.inputs.image_masked for h in halves]), whole.inputs.image_masked)
    assert whole.inputs.image_masked.all(1).tolist() == [True, False, False, True, False, True]  # some per half


def test_condition_dropout_must_be_a_probability():
    with pytest.raises(ValueError, match="cond_dropout"):
        MAGVLTObjective(cond_dropout=1.5)
