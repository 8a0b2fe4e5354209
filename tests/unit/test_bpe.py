"""The CLIP BPE tokenizer: parity with open_clip, the ids of open_clip and MAGVLT's code, MAGVLT rows, BPE-dropout."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from vltk.errors import VltkError
from vltk.text.bpe import BPETokenizer, normalize, pre_split, text_lengths

HAND_CASES = [
    "",
    "   ",
    "a photo of a cat",
    "A Photo Of A CAT.",
    "hello,world!!! ...?!?! (yes) [no] {maybe} <tag> #hash @user $5 100% a+b=c ~_~ ^^ |pipe| back\\slash /",
    "it's I'M you're WE'VE they'll she'd DON'T It'S ThEy'Re 'tis rock'n'roll o'clock",
    "'s's't 'll'd 're've'm",
    "1234567890 3.14159 1,000,000 -42 +7 2nd 1st 3rd 4th 10k 5G 1080p",
    "½ ¾ ² ³ ٣ ४ Ⅻ ①②③",
    "café déjà vu naïve coöperate façade Ångström Ærø smørrebrød Straße ŁÓDŹ İstanbul ǅemal",
    "e\u0301 decomposed accent vs \u00e9 precomposed",
    "東京タワー 北京欢迎你 서울 特別 ひらがな カタカナ",
    "Привет мир ΓΕΙΑ ΣΟΥ κόσμε שלום مرحبا नमस्ते ภาษาไทย",
    "pizza 🍕 and 🍺🍺🍺 emoji 😀😃😄",
    "family 👩‍👩‍👧‍👦 and 👨‍💻 zwj sequences 🏳️‍🌈",
    "skin tones 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 👋🏽‍♀️",
    "flags 🇯🇵🇺🇸 keycaps 1️⃣ #️⃣",
    "cafÃ© mojibake â€œquotedâ€\x9d and Ã¼ber",
    "âœ” No problems",
    "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;apos&#39; &#x2019; &nbsp; &hellip; &amp;amp;",
    "<b>html stays</b> &amp; here",
    "ﬂubberiﬁc ligatures and ＬＯＵＤ　ＮＯＩＳＥＳ fullwidth",
    "“curly” ‘quotes’ — em dash – en dash … ellipsis",
    "tabs\tand\nnewlines\r\nand  multiple   spaces\x0bvt\x0cff \u00a0nbsp \u3000ideographic",
    "\x1b[31mterminal red\x1b[0m control \x00\x07 chars",
    "trailing spaces and newline   \n\n",
    "UPPER lower MiXeD",
    "a" * 100,
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 20),
    "1" * 90,
    "!" * 200,
    "</w> literal word-end marker",
    "\ud83d lone surrogate",
]

FRAGMENTS = [
    "a", "the", "dog", "Dog", "DOGS", "running", "on", "grass", "photo", "of", "red", "BLUE", "square", "circle",
    "it's", "I'M", "We'Ll", "you'd", "they're", "can't", "'s", "'VE", "42", "3.5", "2021", "1,000", "0", "...",
    "!!", "?!", ",", ";", ":", "-", "--", "(", ")", "\"", "'", "&", "&amp;", "&lt;", "&#39;", "é", "ñ", "ü", "ø",
    "ß", "東京", "猫", "한국", "Ωμέγα", "🙂", "👍🏽", "👩‍🚀", "🇫🇷", "Ã©", "â€™", "ﬁ", "Ｗ", "\u200b", "x²", "½",
]
SEPARATORS = [" ", " ", " ", "", "  ", "\t", "\n", " \r\n "]


def generated_cases(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 14))]
        text = "".join(p + rng.choice(SEPARATORS) for p in parts)
        cases.append(text.upper() if rng.random() < 0.1 else text)
    return cases


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    open_clip = pytest.importorskip("open_clip")
    return open_clip


@pytest.fixture(scope="module")
def tok(open_clip_tokenizer) -> BPETokenizer:
    return BPETokenizer.from_clip_gz(Path(open_clip_tokenizer.tokenizer.default_bpe()))


def _assert_parity(tok, open_clip, texts, context_length):
    ours = tok.clip_tokenize(texts, context_length)
    theirs = open_clip.tokenize(texts, context_length=context_length).numpy()
    bad = [t for t, a, b in zip(texts, ours, theirs) if not np.array_equal(a, b)]
    assert not bad, f"{len(bad)} strings differ from open_clip, e.g. {bad[:3]!r}"


def test_vocabulary_matches_reference(tok):
    # open_clip's tokenizer.py and kakaobrain/magvlt's maskgit.py / tokenizers.py: 49,408 ids; SEP is the
    # non-word-final "|" (91), not "|</w>" (347); EOS = PAD = 49407.
    assert tok.vocab_size == 49408
    assert len(tok.merges) == 48894
    assert tok.sep_id == 91 and tok.tokens[91] == "|"
    assert tok.token_to_id("|</w>") == 347
    assert tok.eos_id == tok.pad_id == 49407
    assert tok.sot_id == 49406


def test_parity_with_open_clip_hand_cases(tok, open_clip_tokenizer):
    _assert_parity(tok, open_clip_tokenizer, HAND_CASES, 77)


def test_parity_with_open_clip_generated(tok, open_clip_tokenizer):
    _assert_parity(tok, open_clip_tokenizer, generated_cases(), 77)


def test_parity_when_truncated(tok, open_clip_tokenizer):
    # A short context truncates most strings: CLIP keeps SOT + the first ids and forces EOT into the last slot.
    _assert_parity(tok, open_clip_tokenizer, HAND_CASES + generated_cases(60, seed=1), 12)


def test_normalize_matches_open_clip_cleaning(open_clip_tokenizer):
    # normalize() skips ftfy for plain ASCII; it must still equal CLIP's cleaning on every kind of input.
    clean = open_clip_tokenizer.tokenizer._clean_lower
    for text in HAND_CASES + generated_cases(200, seed=2):
        assert normalize(text) == clean(text), text


def test_magvlt_short_caption(tok, open_clip_tokenizer):
    # MAGVLT: no SOT, the text ids, one EOS, EOS padding; n_txt counts the EOS (magvlt tokenizers.py).
    clip_row = open_clip_tokenizer.tokenize(["A red circle above a blue square."]).numpy()[0]
    ids = clip_row[1 : list(clip_row).index(49407)]
    row = tok.encode_batch(["A red circle above a blue square."], 64)
    assert row.shape == (1, 64) and row.dtype == np.int32
    assert list(row[0, : len(ids)]) == list(ids)
    assert (row[0, len(ids) :] == 49407).all()
    assert list(text_lengths(row, tok.eos_id)) == [len(ids) + 1]


def test_magvlt_long_caption_is_truncated_without_eos(tok):
    caption = " ".join(f"word{i}" for i in range(100))  # 2+ tokens per word: far beyond 64
    ids = tok.encode(caption)
    row = tok.encode_batch([caption], 64)[0]
    assert list(row) == ids[:64]
    assert 49407 not in row
    assert list(text_lengths(row[None], tok.eos_id)) == [64]


def test_magvlt_exact_fit(tok):
    # "a" is one token: 63 of them leave room for the EOS, 64 fill the context with no EOS; both have n_txt = 64.
    rows = tok.encode_batch([" ".join(["a"] * 63), " ".join(["a"] * 64), ""], 64)
    assert rows[0, 62] == tok.token_to_id("a</w>") and rows[0, 63] == 49407
    assert 49407 not in rows[1]
    assert (rows[2] == 49407).all()
    assert list(text_lengths(rows, tok.eos_id)) == [64, 64, 1]
    assert tok.decode_batch(rows) == [" ".join(["a"] * 63), " ".join(["a"] * 64), ""]


def test_decode_returns_normalized_text(tok):
    for text in HAND_CASES + generated_cases(100, seed=3):
        if "\ud83d" in text:
            continue  # a lone surrogate has no UTF-8 bytes; ftfy turns it into U+FFFD, which decode gives back
        assert tok.decode(tok.encode(text)) == " ".join(pre_split(normalize(text))), text
    plain = "  A Small RED circle,  left of\ta green   triangle "
    assert tok.decode(tok.encode(plain)) == "a small red circle , left of a green triangle"


def test_dropout_zero_is_plain_encoding(tok):
    texts = generated_cases(30, seed=4)
    plain = [tok.encode(t) for t in texts]
    assert [tok.encode(t, dropout=0.0, rng=random.Random(1)) for t in texts] == plain
    assert np.array_equal(tok.encode_batch(texts, dropout=0.0), tok.encode_batch(texts))


def test_dropout_varies_segmentation_but_not_text(tok):
    text = "photographers photographing extraordinary internationalization of understanding"
    plain = tok.encode(text)
    seen = {tuple(tok.encode(text, dropout=0.1, rng=random.Random(seed))) for seed in range(20)}
    seen |= {tuple(tok.encode(text, dropout=0.1, rng=np.random.default_rng(seed))) for seed in range(5)}
    assert len(seen) > 5
    assert all(tok.decode(ids) == normalize(text) for ids in seen)
    assert all(len(ids) >= len(plain) for ids in seen)  # dropping merges can only leave more pieces
    assert tok.encode(text) == plain  # the cache was bypassed: dropout results did not leak into it
    same_seed = [tok.encode(text, dropout=0.3, rng=random.Random(7)) for _ in range(2)]
    assert same_seed[0] == same_seed[1]


def test_dropout_one_gives_bytes(tok):
    # p = 1 skips every merge: one token per UTF-8 byte, </w> on each word's last byte. In CLIP's byte alphabet the
    # printable bytes come first in byte order: "!".."~" are ids 0..93, 0xA1..0xAC ids 94..105, 0xAE..0xFF ids 106..187;
    # the word-final copy of id k is 256 + k. "é" is the bytes C3 A9: ids 106 + (0xC3 - 0xAE) = 127 and 94 + 8 = 102.
    ids = tok.encode("Hi, café", dropout=1.0, rng=random.Random(0))
    expect = [ord("h") - 33, 256 + ord("i") - 33, 256 + ord(",") - 33, ord("c") - 33, ord("a") - 33, ord("f") - 33,
              127, 256 + 102]
    assert ids == expect
    assert tok.decode(ids) == "hi , café"


def test_dropout_needs_rng(tok):
    with pytest.raises(ValueError, match="rng"):
        tok.encode("a cat", dropout=0.1)


def test_special_token_in_text_like_clip(tok, open_clip_tokenizer):
    # CLIP's pre-split matches its special tokens in the text itself; open_clip does the same under its own names.
    theirs = open_clip_tokenizer.tokenize(["a <end_of_text> b"]).numpy()[0]
    assert tok.encode("a <|endoftext|> b") == list(theirs[1:4]) == [320, 49407, 321]
    assert tok.decode([tok.sot_id, 320, tok.eos_id]) == "a"


def test_merges_file_round_trip(tok, tmp_path):
    small = BPETokenizer(tok.merges[:500], context_length=32)
    small.save_merges(tmp_path / "merges.txt")
    again = BPETokenizer.from_merges_file(tmp_path / "merges.txt", context_length=32)
    assert again.tokens == small.tokens and again.vocab_size == 512 + 500 + 2
    assert again.sep_id == 91 and again.eos_id == 1013
    text = "a photo of two dogs playing in the snow"
    assert again.encode(text) == small.encode(text)


@pytest.mark.parametrize(
    "content, message",
    [
        ("i n\nt h\n", "header"),
        ("#version: 0.2\ni n x\n", "line 2"),
        ("#version: 0.2\nin t\n", "does not extend"),
        ("#version: 0.2\ni n\ni n\n", "does not extend"),
    ],
)
def test_bad_merges_files(tmp_path, content, message):
    path = tmp_path / "merges.txt"
    path.write_text(content)
    with pytest.raises(VltkError, match=message):
        BPETokenizer.from_merges_file(path)


def test_bad_clip_file(tmp_path):
    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    path.write_text("not gzip")
    with pytest.raises(VltkError, match="cannot read"):
        BPETokenizer.from_clip_gz(path)
