"""ARGVLT: the two orders position by position, shift-by-one and causality, KV-cache decoding, the 0.9 / 0.1 loss
(MAGVLT App. A), the order draw, the size against MAGVLT, a few training steps, and condition dropout (the null
caption and image, rate 0 and 1, keyed draws: one process = two)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from vltk.models.argvlt import ARGVLT, ARGVLTConfig, drop_condition, sequence, slots
from vltk.models.magvlt import MAGVLT, MAGVLTConfig
from vltk.objectives.argvlt import ARGVLTObjective, ARGVLTTask, draw_order
from vltk.objectives.common import Draws
from vltk.text.bpe import BPETokenizer
from vltk.train import OptimConfig, prepare

IMAGE_VOCAB, TEXT_VOCAB, N, C = 16, 24, 4, 5
EOS = TEXT_VOCAB - 1
SIZES = dict(image_vocab=IMAGE_VOCAB, text_vocab=TEXT_VOCAB, image_tokens=N, text_tokens=C)
TINY = ARGVLTConfig(width=32, depth=2, heads=2, dropout=0.0, attn_dropout=0.0, **SIZES)


def tiny_model(seed: int = 0) -> ARGVLT:
    torch.manual_seed(seed)
    return ARGVLT(TINY).eval()


def random_batch(b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(IMAGE_VOCAB, (b, N), generator=g), torch.randint(EOS, (b, C), generator=g)


def all_logits(model: ARGVLT, order: str, image: torch.Tensor, text: torch.Tensor,
               image_positions: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """{sequence position of a target: (B, V) logits predicting it}, from one full forward."""
    out = model(order, image, text, image_query=torch.ones_like(image, dtype=torch.bool),
                text_query=torch.ones_like(text, dtype=torch.bool), image_positions=image_positions)
    s = slots(order, N, C)
    b = image.shape[0]
    image_logits, text_logits = out.image_logits.view(b, N, -1), out.text_logits.view(b, C, -1)
    return {**{s.image.start + k: image_logits[:, k] for k in range(N)},
            **{s.text.start + k: text_logits[:, k] for k in range(C)}}


# ---- layouts -------------------------------------------------------------------------------------------------------

def test_both_orders_token_by_token():
    # Small sizes written out by hand: N = 4 codes, C = 3 text ids; BOI = 0 and BOT = 1 as in MAGVLT's special table.
    image, text = torch.tensor([[10, 11, 12, 13]]), torch.tensor([[20, 21, 22]])
    assert sequence("t2i", image, text).tolist() == [[1, 20, 21, 22, 0, 10, 11, 12, 13]]
    assert sequence("i2t", image, text).tolist() == [[0, 10, 11, 12, 13, 1, 20, 21, 22]]
    t2i, i2t = slots("t2i", 4, 3), slots("i2t", 4, 3)
    assert (t2i.begin, t2i.text, t2i.image) == ((0, 4), slice(1, 4), slice(5, 9))
    assert (i2t.begin, i2t.image, i2t.text) == ((0, 5), slice(1, 5), slice(6, 9))
    assert [t2i.kind(p) for p in range(10)] == ["begin"] + ["text"] * 3 + ["begin"] + ["image"] * 4 + [None]
    with pytest.raises(ValueError, match="unknown order"):
        slots("it2it", 4, 3)


@pytest.mark.parametrize("order", ["t2i", "i2t"])
def test_embeddings_position_by_position(order):
    model = tiny_model()
    image, text = random_batch(2)
    positions = torch.stack([torch.randperm(N, generator=torch.Generator().manual_seed(i)) for i in range(2)])
    x = model.embed(order, sequence(order, image, text), image_positions=positions)  # (2, L, D)
    tokens, specials = model.tokens.weight, model.specials.weight
    first, second = (1, 0) if order == "t2i" else (0, 1)  # BOT, BOI or BOI, BOT
    s = slots(order, N, C)
    for b in range(2):
        assert torch.equal(x[b, s.begin[0]], specials[first] + model.pos_begin[0])
        assert torch.equal(x[b, s.begin[1]], specials[second] + model.pos_begin[1])
        for k in range(N):
            assert torch.equal(x[b, s.image.start + k], tokens[image[b, k]] + model.pos_image[positions[b, k]])
        for k in range(C):
            assert torch.equal(x[b, s.text.start + k], tokens[IMAGE_VOCAB + text[b, k]] + model.pos_text[k])
    # A span from the middle (as the KV cache feeds it) embeds exactly like the same span of the whole sequence.
    span = sequence(order, image, text)[:, 3:N + 4]
    torch.testing.assert_close(model.embed(order, span, start=3, image_positions=positions), x[:, 3:N + 4],
                               rtol=0, atol=0)


@pytest.mark.parametrize("order", ["t2i", "i2t"])
def test_each_target_depends_on_exactly_the_tokens_before_it(order):
    # Shift by one and causality together: changing the token at position p changes the logits of every target
    # after p (the target at p + 1 is predicted by the output at p) and of no target at or before p.
    model = tiny_model()
    image, text = random_batch(2)
    base = all_logits(model, order, image, text)
    s = slots(order, N, C)
    for p in [*range(s.image.start, s.image.stop), *range(s.text.start, s.text.stop)]:
        image2, text2 = image.clone(), text.clone()
        if s.kind(p) == "image":
            image2[:, p - s.image.start] = (image2[:, p - s.image.start] + 1) % IMAGE_VOCAB
        else:
            text2[:, p - s.text.start] = (text2[:, p - s.text.start] + 1) % EOS
        changed = all_logits(model, order, image2, text2)
        for q, logits in base.items():
            same = torch.allclose(logits, changed[q], rtol=0, atol=1e-6)
            assert same == (q <= p), (order, p, q)


# ---- KV cache ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order,permuted", [("t2i", False), ("i2t", False), ("t2i", True)])
def test_kv_cache_decoding_equals_one_causal_forward(order, permuted):
    model = tiny_model()
    image, text = random_batch(3)
    positions = torch.stack([torch.randperm(N) for _ in range(3)]) if permuted else None  # AR inpainting orders
    full = all_logits(model, order, image, text, image_positions=positions)
    ids, s = sequence(order, image, text), slots(order, N, C)
    cache = model.new_cache(batch=3)
    p, seen = 0, []
    while p < TINY.sequence_length - 1:
        end = p + 1 if s.kind(p + 1) != "begin" else p + 2  # a begin token is fed with the block before it
        logits = model.step(cache, order, ids[:, p:end], image_positions=positions)
        torch.testing.assert_close(logits, full[end], rtol=1e-5, atol=1e-5)
        seen.append(end)
        p = end
    assert sorted(seen) == sorted(full)  # every target was predicted once
    # The whole prefix at once (how a sampler starts) gives the first generated token's logits too.
    second = s.image if order == "t2i" else s.text
    logits = model.step(model.new_cache(batch=3), order, ids[:, :second.start], image_positions=positions)
    torch.testing.assert_close(logits, full[second.start], rtol=1e-5, atol=1e-5)


def test_a_block_that_ends_before_a_begin_token_is_refused_without_touching_the_cache():
    model = tiny_model()
    image, text = random_batch(1)
    cache = model.new_cache(batch=1)
    with pytest.raises(ValueError, match="begin"):
        model.step(cache, "t2i", sequence("t2i", image, text)[:, :1 + C])  # [BOT, text]: next is BOI
    assert cache.length == 0


# ---- loss ----------------------------------------------------------------------------------------------------------

B = 3
TEXT_LEN = torch.tensor([2, C, 3])  # caption + EOS; the second is truncated (no EOS)


def caption_batch(step: int = 0) -> dict[str, torch.Tensor]:
    image, ids = random_batch(B, seed=7)
    text = torch.where(torch.arange(C) < TEXT_LEN.unsqueeze(1) - 1, ids, EOS)
    text[1] = ids[1]  # truncated: C tokens, no EOS
    return {"index": torch.arange(B) + step * B, "image": image, "text": text, "text_len": TEXT_LEN.clone()}


def make_task(objective: ARGVLTObjective, lr: float = 1e-3, seed: int = 0,
              global_batch: int = B) -> tuple[ARGVLTTask, ARGVLT]:
    accelerator = Accelerator(cpu=True)
    model = tiny_model(seed).train()
    parts = prepare(accelerator, {"model": (model, OptimConfig(lr=lr, schedule="constant"))})
    return ARGVLTTask(parts, objective, accelerator, global_batch=global_batch, seed=0), model


@pytest.mark.parametrize("order", ["t2i", "i2t"])
def test_loss_is_point_nine_generated_plus_point_one_condition(order):
    weights = (1.0, 0.0) if order == "t2i" else (0.0, 1.0)
    task, model = make_task(ARGVLTObjective(order_weights=weights))
    batch = caption_batch()
    metrics = task.train_step(batch, 0)

    # Independently: all logits (pads included), then F.cross_entropy over each modality's valid tokens.
    with torch.no_grad():
        logits = all_logits(model, order, batch["image"], batch["text"])
    s = slots(order, N, C)
    image_logits = torch.stack([logits[s.image.start + k] for k in range(N)], dim=1)  # (B, N, V_img)
    text_logits = torch.stack([logits[s.text.start + k] for k in range(C)], dim=1)  # (B, C, V_txt)
    valid = torch.tensor([[k < n for k in range(C)] for n in TEXT_LEN.tolist()])  # 2 + 5 + 3 = 10 text targets
    assert int(valid.sum()) == 10
    image_ce = F.cross_entropy(image_logits.flatten(0, 1), batch["image"].flatten(), label_smoothing=0.1)
    text_ce = F.cross_entropy(text_logits[valid], batch["text"][valid], label_smoothing=0.1)
    generated, condition = (image_ce, text_ce) if order == "t2i" else (text_ce, image_ce)
    assert metrics["loss"] == pytest.approx(0.9 * generated.item() + 0.1 * condition.item(), rel=1e-5)
    assert metrics[f"{order}/image"] == pytest.approx(image_ce.item(), rel=1e-5)
    assert metrics[f"{order}/text"] == pytest.approx(text_ce.item(), rel=1e-5)
    text_acc = (text_logits[valid].argmax(-1) == batch["text"][valid]).float().mean().item()
    assert metrics[f"{order}/text_acc"] == pytest.approx(text_acc)
    assert metrics[f"order/{order}"] == 1.0 and not any(k.startswith("i2t/" if order == "t2i" else "t2i/")
                                                        for k in metrics)


def test_pads_are_not_targets_but_the_eos_is():
    task, _ = make_task(ARGVLTObjective(order_weights=(0.0, 1.0)))  # i2t: the text comes last
    batch = caption_batch()
    loss = task.train_step(batch, 0)["loss"]
    repadded = {**batch, "text": batch["text"].clone()}
    repadded["text"][0, 2:] = torch.tensor([3, 4, 5])  # sample 0: text_len 2, so positions 2.. are pads
    assert task.train_step(repadded, 0)["loss"] == pytest.approx(loss, rel=1e-6)
    no_eos = {**batch, "text": batch["text"].clone()}
    no_eos["text"][0, 1] = 3  # sample 0's EOS (position text_len - 1) is a target
    assert task.train_step(no_eos, 0)["loss"] != pytest.approx(loss, rel=1e-6)
    # In t2i the pads are conditioning keys (kept, as in minDALL-E): they do change the image predictions.
    t2i, _ = make_task(ARGVLTObjective(order_weights=(1.0, 0.0)))
    assert t2i.train_step(repadded, 0)["t2i/image"] != pytest.approx(t2i.train_step(batch, 0)["t2i/image"], rel=1e-6)


def test_order_frequencies_follow_the_weights_and_the_draw_mode():
    def orders(objective, rank, steps=2000):
        return [draw_order(objective, Draws(5, step, 1, torch.zeros(1, dtype=torch.long), "cpu"), rank)
                for step in range(steps)]

    shared = ARGVLTObjective(order_weights=(3.0, 1.0))
    draws = orders(shared, rank=0)
    assert draws.count("t2i") / len(draws) == pytest.approx(0.75, abs=0.04)  # 4 binomial standard deviations
    assert orders(shared, rank=1) == draws  # one order for the whole global batch
    per_rank = ARGVLTObjective(order_weights=(3.0, 1.0), order_draw="rank")
    assert orders(per_rank, rank=0) == draws  # one process: the same run either way
    other = orders(per_rank, rank=1)
    assert other != draws and other.count("t2i") / len(other) == pytest.approx(0.75, abs=0.04)
    assert set(orders(ARGVLTObjective(order_weights=(0.0, 2.0)), rank=0, steps=50)) == {"i2t"}
    with pytest.raises(ValueError, match="order_weights"):
        ARGVLTObjective(order_weights=(0.0, 0.0))


# ---- size and training ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("official_positions", [True, False])
def test_same_size_as_magvlt_but_for_the_special_tables(official_positions):
    sizes = dict(image_vocab=64, text_vocab=96, image_tokens=16, text_tokens=8)
    d, n, c = 32, 16, 8
    torch.manual_seed(0)
    ar = ARGVLT(ARGVLTConfig(width=d, depth=2, heads=2, **sizes))
    mag = MAGVLT(MAGVLTConfig(width=d, depth=2, heads=2, official_positions=official_positions, **sizes))
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    # MAGVLT only: 10 special tokens, its special positions (every position, or the 4 structural ones), and the
    # length head (d -> C, no bias). ARGVLT only: 2 begin tokens, 2 begin positions, the final LayerNorm (2d).
    magvlt_only = d * (10 + (4 + n + c if official_positions else 4) + c)
    argvlt_only = d * (2 + 2 + 2)
    assert count(mag) - count(ar) == magvlt_only - argvlt_only
    # Everything else is the same tensors: joint table, modality positions, trunk and tied head.
    ar_shapes = {k: v.shape for k, v in ar.state_dict().items()}
    mag_shapes = {k: v.shape for k, v in mag.state_dict().items()}
    assert set(ar_shapes) - set(mag_shapes) == {"pos_begin", "norm.weight", "norm.bias"}
    assert set(mag_shapes) - set(ar_shapes) == {"pos_special", "length_head.weight"}
    common = (set(ar_shapes) & set(mag_shapes)) - {"specials.weight"}
    assert {k: ar_shapes[k] for k in common} == {k: mag_shapes[k] for k in common}


def test_training_steps_on_a_fixed_batch_lower_both_orders_losses():
    task, _ = make_task(ARGVLTObjective(), lr=1e-2)
    optimizer = task.parts["model"].optimizer
    losses: dict[str, list[float]] = {"t2i": [], "i2t": []}
    for step in range(30):
        metrics = task.train_step(caption_batch(step), step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses["t2i" if metrics["order/t2i"] == 1.0 else "i2t"].append(metrics["loss"])
    for order, values in losses.items():
        assert len(values) >= 5, order  # both orders were drawn (order_weights (1, 1))
        assert values[-1] < 0.6 * values[0], (order, values)


# ---- condition dropout (classifier-free guidance's null condition) -------------------------------------------------

NULL_IMAGE = IMAGE_VOCAB + TEXT_VOCAB - 2  # the text vocabulary's SOT row, in every image slot


def only(order: str) -> tuple[float, float]:
    return (1.0, 0.0) if order == "t2i" else (0.0, 1.0)


def fed(monkeypatch: pytest.MonkeyPatch, model: ARGVLT) -> list[dict]:
    """Record what every forward of `model` is fed (ids and queries), then run it."""
    calls, real = [], model.forward

    def forward(order, image, text, **queries):
        calls.append({"order": order, "image": image.clone(), "text": text.clone(), **queries})
        return real(order, image, text, **queries)

    monkeypatch.setattr(model, "forward", forward)
    return calls


def test_null_condition_ids_are_the_tokenizers():
    tokenizer = BPETokenizer([("a", "b</w>")], context_length=C)
    cfg = ARGVLTConfig(width=16, depth=1, heads=2, image_vocab=IMAGE_VOCAB, text_vocab=tokenizer.vocab_size,
                       image_tokens=N, text_tokens=C)
    assert cfg.eos_id == tokenizer.eos_id and cfg.null_image_id == IMAGE_VOCAB + tokenizer.sot_id
    image, text = random_batch(3)
    text = torch.from_numpy(tokenizer.encode_batch(["ab", "a b ab", "b"]).astype("int64"))
    drop = torch.tensor([True, False, True])
    same, dropped = drop_condition("t2i", image, text, drop, cfg)
    assert torch.equal(same, image) and torch.equal(dropped[~drop], text[~drop])
    assert dropped[0].tolist() == dropped[2].tolist() == tokenizer.encode_batch([""])[0].tolist()  # the empty caption
    null, same = drop_condition("i2t", image, text, drop, cfg)
    assert torch.equal(same, text) and torch.equal(null[~drop], image[~drop])
    assert (null[drop] == cfg.null_image_id).all()
    model = ARGVLT(cfg)  # the null image embeds as SOT's row of the joint table (plus the slot's position)
    x = model.embed("i2t", sequence("i2t", null, text))[0, 1:1 + N]
    torch.testing.assert_close(x, model.tokens.weight[cfg.null_image_id] + model.pos_image, rtol=0, atol=0)


@pytest.mark.parametrize("order", ["t2i", "i2t"])
def test_condition_dropout_0_feeds_the_batch_as_it_is(order, monkeypatch):
    task, model = make_task(ARGVLTObjective(order_weights=only(order)))
    assert task.cfg.cond_dropout == 0.0  # the default: every existing config trains as before
    calls, batch = fed(monkeypatch, model), caption_batch()
    metrics = task.train_step(batch, 0)
    (call,) = calls
    assert torch.equal(call["image"], batch["image"]) and torch.equal(call["text"], batch["text"])
    assert call["image_query"].all() and torch.equal(call["text_query"], torch.arange(C) < TEXT_LEN.unsqueeze(1))
    assert {f"{order}/{k}" for k in ("image", "text", "image_acc", "text_acc")} <= set(metrics)


@pytest.mark.parametrize("order", ["t2i", "i2t"])
def test_condition_dropout_1_drops_every_condition_and_its_loss(order, monkeypatch):
    task, model = make_task(ARGVLTObjective(order_weights=only(order), cond_dropout=1.0))
    calls, batch = fed(monkeypatch, model), caption_batch()
    metrics = task.train_step(batch, 0)
    (call,) = calls
    if order == "t2i":  # the empty caption; the image is the target, as it is
        assert torch.equal(call["image"], batch["image"]) and (call["text"] == EOS).all()
        assert not call["text_query"].any() and call["image_query"].all()
    else:  # the null image; the caption is the target, as it is
        assert (call["image"] == NULL_IMAGE).all() and torch.equal(call["text"], batch["text"])
        assert not call["image_query"].any() and torch.equal(call["text_query"], torch.arange(C) < TEXT_LEN[:, None])
    # Independently: the generated modality's CE under the null condition, weight 0.9; the dropped one takes none.
    with torch.no_grad():
        logits = all_logits(model, order, call["image"], call["text"])
    s = slots(order, N, C)
    if order == "t2i":
        image_logits = torch.stack([logits[s.image.start + k] for k in range(N)], dim=1)  # (B, N, V_img)
        generated = F.cross_entropy(image_logits.flatten(0, 1), batch["image"].flatten(), label_smoothing=0.1)
    else:
        text_logits = torch.stack([logits[s.text.start + k] for k in range(C)], dim=1)  # (B, C, V_txt)
        valid = torch.arange(C) < TEXT_LEN.unsqueeze(1)
        generated = F.cross_entropy(text_logits[valid], batch["text"][valid], label_smoothing=0.1)
    assert metrics["loss"] == pytest.approx(0.9 * generated.item(), rel=1e-5)
    condition = "text" if order == "t2i" else "image"
    assert f"{order}/{condition}" not in metrics and f"{order}/{condition}_acc" not in metrics


def test_condition_dropout_is_keyed_one_process_equals_two_and_about_as_often_as_its_rate(monkeypatch):
    b = 6
    task, model = make_task(ARGVLTObjective(cond_dropout=0.5), global_batch=b)
    plain, _ = make_task(ARGVLTObjective(), global_batch=b)
    calls = fed(monkeypatch, model)
    image, ids = random_batch(b, seed=3)
    text_len = torch.tensor([2, 3, 4, 5, 2, 3])
    text = torch.where(torch.arange(C) < text_len.unsqueeze(1) - 1, ids, EOS)

    def batch(step: int, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
        whole = {"index": torch.arange(b) + step * b, "image": image, "text": text, "text_len": text_len}
        return {k: v[rows] for k, v in whole.items()}

    def dropped(call: dict) -> torch.Tensor:
        """(b,) bool: the rows whose condition the model did not see."""
        return (call["text"] != text[:len(call["text"])]).any(1) | (call["image"] == NULL_IMAGE).all(1)

    shares = []
    for step in range(60):
        metrics = task.train_step(batch(step), step)
        assert metrics["order/t2i"] == plain.train_step(batch(step), step)["order/t2i"]  # the order draw is untouched
        whole = calls[-1]
        for rows in (slice(0, 3), slice(3, 6)):  # two processes of 3 samples each feed what one process of 6 does
            task.train_step(batch(step, rows), step)
            half = calls[-1]
            keys = ("image", "text", "image_query", "text_query")
            assert all(torch.equal(half[key], whole[key][rows]) for key in keys)
        shares.append(dropped(whole))
    share = float(torch.cat(shares).float().mean())
    assert abs(share - 0.5) < 4 * (0.25 / (60 * b)) ** 0.5, share
    assert 0 < torch.stack(shares).sum(1).float().std()  # the rows dropped differ from step to step
    with pytest.raises(ValueError, match="cond_dropout"):
        ARGVLTObjective(cond_dropout=1.5)
