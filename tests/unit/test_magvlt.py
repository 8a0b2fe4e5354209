"""The MAGVLT model: layouts, embeddings, attention masks and heads, against kakaobrain/magvlt's maskgit.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vltk.models.magvlt import (
    BOC, BOG, BOI, BOT, LEFT, MASK_IMAGE, MASK_TEXT, MAGVLT, Inputs, MAGVLTConfig, attention_mask, slots,
    structural_tokens,
)

N, C, VI, VT = 4, 3, 11, 7


def tiny(**kw) -> MAGVLT:
    torch.manual_seed(0)
    cfg = MAGVLTConfig(size="tiny", width=16, depth=2, heads=2, dropout=0.0, attn_dropout=0.0, image_vocab=VI,
                       text_vocab=VT, image_tokens=N, text_tokens=C, **kw)
    return MAGVLT(cfg).eval()


def inputs(layout="t2i", b=2, text_len=(2, 3), image_masked=None, text_masked=None, selector=None) -> Inputs:
    g = torch.Generator().manual_seed(1)
    return Inputs(layout, torch.randint(0, VI, (b, N), generator=g),
                  image_masked if image_masked is not None else torch.zeros(b, N, dtype=torch.bool),
                  torch.randint(0, VT, (b, C), generator=g),
                  text_masked if text_masked is not None else torch.zeros(b, C, dtype=torch.bool),
                  torch.tensor(text_len), selector)


def test_paper_layout_positions():
    # kakaobrain/magvlt `_get_input` for 256 image and 64 text tokens.
    t2i, i2t = slots("t2i", 256, 64), slots("i2t", 256, 64)
    assert (t2i.text.start, t2i.text.stop, t2i.structural, t2i.image.start, t2i.image.stop) == (2, 66, (0, 1, 66, 67),
                                                                                                68, 324)
    assert (i2t.image.start, i2t.image.stop, i2t.structural, i2t.text.start, i2t.text.stop) == (2, 258,
                                                                                                (0, 1, 258, 259),
                                                                                                260, 324)
    assert i2t.bot == 259 and t2i.bot is None
    sel = torch.tensor([BOG, LEFT])
    assert structural_tokens("t2i", sel).tolist() == [[BOC, BOT, BOG, BOI], [BOC, BOT, LEFT, BOI]]
    assert structural_tokens("i2t", sel).tolist() == [[BOC, BOI, BOG, BOT], [BOC, BOI, LEFT, BOT]]


def test_base_preset_has_the_papers_371m_parameters():
    cfg = MAGVLTConfig(size="base", image_vocab=16384, text_vocab=49408, image_tokens=256, text_tokens=64)
    with torch.device("meta"):
        model = MAGVLT(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert (model.cfg.width, model.cfg.depth, model.cfg.heads) == (1024, 24, 8)
    assert abs(params - 371e6) / 371e6 < 0.005  # MAGVLT Tab. 8: 371M


def test_embedding_parts_follow_the_official_code():
    model = tiny()
    m_img = torch.tensor([[False, True, False, False], [False] * 4])
    m_txt = torch.tensor([[False] * 3, [False, False, True]])
    x = inputs("t2i", image_masked=m_img, text_masked=m_txt, selector=torch.tensor([BOG, LEFT]))
    e = model.embed(x)
    s = slots("t2i", N, C)
    tok, spc, ps = model.tokens.weight, model.specials.weight, model.pos_special
    # Image token k: row k + pos_image[k]; masked: MASK_IMAGE + pos_image[k] + pos_special[k] (the quirk).
    assert torch.allclose(e[0, s.image.start + 0], tok[x.image[0, 0]] + model.pos_image[0])
    assert torch.allclose(e[0, s.image.start + 1], spc[MASK_IMAGE] + model.pos_image[1] + ps[1])
    # Text id j: row image_vocab + j; masked text: MASK_TEXT + pos_text[k] + pos_special[k].
    assert torch.allclose(e[1, s.text.start + 0], tok[VI + x.text[1, 0]] + model.pos_text[0])
    assert torch.allclose(e[1, s.text.start + 2], spc[MASK_TEXT] + model.pos_text[2] + ps[2])
    # Structural tokens: special row + pos_special[q], q = 0..3; the selector fills the BOG slot.
    assert torch.allclose(e[0, s.structural[0]], spc[BOC] + ps[0])
    assert torch.allclose(e[1, s.structural[2]], spc[LEFT] + ps[2])
    assert torch.allclose(e[0, s.structural[3]], spc[BOI] + ps[3])


def test_clean_positions_drop_the_quirk():
    model = tiny(official_positions=False)
    assert model.pos_special.shape[0] == 4
    x = inputs("i2t", image_masked=torch.ones(2, N, dtype=torch.bool))
    e = model.embed(x)
    s = slots("i2t", N, C)
    assert torch.allclose(e[0, s.image.start + 2], model.specials.weight[MASK_IMAGE] + model.pos_image[2])


def test_attention_mask_position_by_position():
    # N = 4, C = 3, text_len = 2: text position 2 is a pad.
    T, F = True, False
    t2i = attention_mask("t2i", torch.tensor([2]), N, C)[0]
    # t2i: [BOC, BOT, t0, t1, pad, BOG, BOI, i0..i3]; the pad is no key, and as a query sees only itself.
    key_row = [T, T, T, T, F, T, T, T, T, T, T]
    for q in range(11):
        expected = [q == 4 and k == 4 for k in range(11)] if q == 4 else key_row
        assert t2i[q].tolist() == expected, q
    i2t = attention_mask("i2t", torch.tensor([2]), N, C)[0]
    # i2t: [BOC, BOI, i0..i3, BOG, BOT, t0, t1, pad]; the pad is no key (still a query); BOT (7) sees no text.
    key_row = [T] * 10 + [F]
    for q in range(11):
        expected = [T] * 8 + [F, F, F] if q == 7 else key_row
        assert i2t[q].tolist() == expected, q


def test_blind_prefix_mask_position_by_position():
    # i2t, N = 4, C = 3, text_len = 2, image given: [BOC, BOI, i0..i3, BOG, BOT, t0, t1, pad]; positions 0..7 (the
    # prefix) see no text key at all; the text queries (8..10) see the prefix and the visible text, as before.
    T, F = True, False
    blind = attention_mask("i2t", torch.tensor([2, 2]), N, C, blind=torch.tensor([True, False]))
    for q in range(11):
        expected = [T] * 8 + [F, F, F] if q < 8 else [T] * 10 + [F]
        assert blind[0, q].tolist() == expected, q
    assert torch.equal(blind[1], attention_mask("i2t", torch.tensor([2]), N, C)[0])  # not blind: the official mask


@pytest.mark.parametrize("blind_prefix", [True, False])
def test_the_length_head_reads_the_text_only_with_the_official_mask(blind_prefix):
    """With the image given, BOT's length logits must not depend on the text or its length (at inference the text is
    all masked over the whole context, in training it is the true caption): so with blind_prefix. The official mask
    leaks both through the image tokens from the second layer on (this model has two)."""
    model = tiny(blind_prefix=blind_prefix)
    x = inputs("i2t", text_len=(2, 3))
    masked_all = dataclasses.replace(x, text_masked=torch.ones_like(x.text_masked), text_len=torch.tensor([C, C]))
    with torch.no_grad():
        seen, hidden = (model(v, length=True).length_logits for v in (x, masked_all))
    assert torch.allclose(seen, hidden, atol=1e-6) == blind_prefix
    # An image being generated (IT2IT) reads the text either way, and so does BOT through it.
    some = torch.zeros(2, N, dtype=torch.bool)
    some[:, 0] = True
    joint = dataclasses.replace(x, image_masked=some)
    with torch.no_grad():
        seen, hidden = (model(v, length=True).length_logits
                        for v in (joint, dataclasses.replace(masked_all, image_masked=some)))
    assert not torch.allclose(seen, hidden, atol=1e-6)


def test_every_row_has_a_key_even_with_empty_text():
    mask = attention_mask("t2i", torch.tensor([0]), N, C)
    assert mask.any(dim=2).all()
    model = tiny()
    out = model(inputs("t2i", text_len=(0, 1)), image_query=torch.ones(2, N, dtype=torch.bool))
    assert torch.isfinite(out.image_logits).all()


def test_pads_do_not_change_any_prediction():
    model = tiny()
    x = inputs("i2t", text_len=(2, 2), text_masked=torch.tensor([[True, False, False]] * 2))
    query = {"image_query": torch.ones(2, N, dtype=torch.bool), "text_query": torch.ones(2, C, dtype=torch.bool)}
    before = model(x, length=True, **query)
    x.text[:, 2] = (x.text[:, 2] + 1) % VT  # change the pads only
    after = model(x, length=True, **query)
    assert torch.allclose(before.image_logits, after.image_logits, atol=1e-6)
    assert torch.allclose(before.length_logits, after.length_logits, atol=1e-6)
    rows = torch.tensor([0, 1, 3, 4])  # text predictions at non-pad positions (row-major: sample 0 t0..t2, sample 1)
    assert torch.allclose(before.text_logits[rows], after.text_logits[rows], atol=1e-6)


@pytest.mark.parametrize("layout", ["t2i", "i2t"])
def test_dropping_pad_columns_changes_no_prediction(layout):
    # A caller may pass only the first max(text_len) text columns: the pads past it are no key (and no query)
    model = tiny()
    x = inputs(layout, text_len=(2, 2), image_masked=torch.tensor([[True, False, True, False]] * 2),
               text_masked=torch.tensor([[True, False, False]] * 2))
    short = Inputs(layout, x.image, x.image_masked, x.text[:, :2], x.text_masked[:, :2], x.text_len)
    full = model(x, image_query=x.image_masked, text_query=x.text_masked, length=layout == "i2t")
    cut = model(short, image_query=x.image_masked, text_query=short.text_masked, length=layout == "i2t")
    assert torch.allclose(full.image_logits, cut.image_logits, atol=1e-5)
    assert torch.allclose(full.text_logits, cut.text_logits, atol=1e-5)
    if layout == "i2t":
        assert torch.allclose(full.length_logits, cut.length_logits, atol=1e-5)


@pytest.mark.parametrize("layout", ["t2i", "i2t"])
def test_forward_drops_the_pad_columns_and_no_output_changes(layout, monkeypatch):
    model = tiny()
    x = inputs(layout, text_len=(1, 1), image_masked=torch.tensor([[True, False, True, False]] * 2),
               text_masked=torch.tensor([[True, False, False]] * 2))
    query = {"image_query": x.image_masked, "text_query": x.text_masked, "length": layout == "i2t"}
    seen = []
    monkeypatch.setattr(model.transformer, "forward", lambda h, mask: seen.append(h.shape[1]) or type(
        model.transformer).forward(model.transformer, h, mask=mask))
    cut = model(x, **query)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the compiled path keeps every column
    full = model(x, **query)
    assert seen == [4 + N + 1, 4 + N + C]
    for a, b in [(full.image_logits, cut.image_logits), (full.text_logits, cut.text_logits),
                 (full.length_logits, cut.length_logits)]:
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-5))
    # A query at a pad column keeps that column (and its output).
    asked = x.text_masked.clone()
    asked[:, 2] = True
    assert model(x, text_query=asked).text_logits.shape[0] == int(asked.sum())


def test_length_head_does_not_read_the_text_directly():
    # The BOT query is blocked from the text keys. Only that: image tokens still attend to the text, so from the second
    # layer on text reaches BOT through them (as in the official mask); one layer isolates the direct path.
    torch.manual_seed(0)
    model = MAGVLT(MAGVLTConfig(width=16, depth=1, heads=2, dropout=0.0, attn_dropout=0.0, image_vocab=VI,
                                text_vocab=VT, image_tokens=N, text_tokens=C)).eval()
    x = inputs("i2t", text_len=(3, 3))
    before = model(x, length=True).length_logits
    x.text = (x.text + 1) % VT
    assert torch.allclose(before, model(x, length=True).length_logits, atol=1e-6)
    x.image = (x.image + 1) % VI
    assert not torch.allclose(before, model(x, length=True).length_logits, atol=1e-6)
    with pytest.raises(ValueError, match="image-first"):
        model(inputs("t2i"), length=True)


def test_heads_use_the_tied_table_and_each_modalitys_vocabulary():
    model = tiny()
    x = inputs("i2t", image_masked=torch.ones(2, N, dtype=torch.bool), text_masked=torch.ones(2, C, dtype=torch.bool))
    out = model(x, image_query=x.image_masked, text_query=x.text_masked, length=True)
    assert out.image_logits.shape == (2 * N, VI) and out.text_logits.shape == (2 * C, VT)
    assert out.length_logits.shape == (2, C)
    out.text_logits.sum().backward()
    grad = model.tokens.weight.grad
    assert grad[VI:].abs().sum() > 0  # text logits are against the text rows of the input table
    # Image rows receive gradient only through the (unmasked-free) input path, which is empty here.
    assert grad[:VI].abs().sum() == 0
