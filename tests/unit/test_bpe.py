"""The CLIP BPE tokenizer: parity with open_clip, the ids of open_clip and MAGVLT's code, MAGVLT rows, BPE-dropout,
special-token text read as text."""

from __future__ import annotations

import html
import random
from pathlib import Path

import numpy as np
import pytest
import regex

from vltk.errors import VltkError
from vltk.text.bpe import EOT, BPETokenizer, normalize, pre_split, text_lengths, text_pieces

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


# Control-token text a caption may hold: CLIP's specials whole, partial, in other cases, HTML-escaped (unescaped by
# the cleaning), full-width; and open_clip's own special names, which open_clip.tokenize does map to its specials.
LITERALS = [
    "<|endoftext|>", "<|startoftext|>", "<|endoftext", "endoftext|>", "<|endof", "<|", "|>", "<|ENDOFTEXT|>",
    "<|EndOfText|>", "&lt;|endoftext|&gt;", "&amp;lt;|startoftext|&amp;gt;", "<| endoftext |>", "<||endoftext||>",
    "<<|endoftext|>>", "＜｜endoftext｜＞", "<|startoftext|><|endoftext|>",
]
OPEN_CLIP_NAMES = ["<end_of_text>", "<start_of_text>", "<END_OF_TEXT>"]
WHITESPACE_RUNS = ["  ", "\t\t", "\n \n", "\u3000", "\u00a0 ", " \r\n\t "]


def _literal_cases(rng: random.Random) -> list[str]:
    """Every literal alone, spaced, glued to words on either side, glued after punctuation, and repeated."""
    cases = []
    for lit in LITERALS + OPEN_CLIP_NAMES:
        w1, w2 = rng.choice(FRAGMENTS), rng.choice(FRAGMENTS)
        cases += [lit, f"{w1} {lit} {w2}", f"{w1}{lit}", f"{lit}{w2}", f"{w1}{lit}{w2}", f"!{lit}?",
                  lit * rng.randint(2, 6), f"{lit} " * rng.randint(2, 30) + w1]
    return cases


def _mixed_case(rng: random.Random) -> str:
    """Fragments, literals and whitespace runs; a quarter of them long enough to be truncated at 77."""
    parts = rng.randint(40, 90) if rng.random() < 0.25 else rng.randint(1, 14)
    pools = [LITERALS] * 30 + [OPEN_CLIP_NAMES] + [FRAGMENTS] * 69  # percent of the parts
    text = "".join(rng.choice(rng.choice(pools)) + rng.choice(SEPARATORS + WHITESPACE_RUNS + ["", ""])
                   for _ in range(parts))
    roll = rng.random()
    if roll < 0.1:
        return text.upper()
    if roll < 0.2:
        return html.escape(text)  # entities, unescaped again by the cleaning
    return text


def held_out_cases() -> list[str]:
    """The held-out set (deterministic): the hand cases, every literal in every position, and random mixes."""
    rng = random.Random(18)
    return HAND_CASES + _literal_cases(rng) + [_mixed_case(rng) for _ in range(220)]


def _has_open_clip_special(text: str, open_clip) -> bool:
    # open_clip.tokenize maps its own special names to ids 49406 / 49407 wherever its pre-split finds them.
    tokenizer = open_clip.tokenizer._tokenizer
    return any(p in ("<start_of_text>", "<end_of_text>") for p in tokenizer.pat.findall(tokenizer.clean_fn(text)))


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    return held_out_cases()


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    open_clip = pytest.importorskip("open_clip")
    return open_clip


@pytest.fixture(scope="module")
def tok(open_clip_tokenizer) -> BPETokenizer:
    return BPETokenizer.from_clip_gz(Path(open_clip_tokenizer.tokenizer.default_bpe()))


@pytest.fixture(scope="module")
def open_clip_text_only(open_clip_tokenizer):
    """open_clip's SimpleTokenizer (its cleaning, BPE and truncation) with its special alternatives taken out of the
    pre-split pattern and the cache: open_clip's encoding of every string with special names read as ordinary text."""
    reference = open_clip_tokenizer.tokenizer.SimpleTokenizer()
    prefix = "<start_of_text>|<end_of_text>|"
    assert reference.pat.pattern.startswith(prefix)
    reference.pat = regex.compile(reference.pat.pattern[len(prefix):], regex.IGNORECASE)
    reference.cache = {}
    return reference


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


@pytest.mark.parametrize("context_length", [77, 16])
def test_held_out_parity_with_open_clip(tok, open_clip_tokenizer, open_clip_text_only, held_out, context_length):
    # open_clip (3.3) reads CLIP's `<|endoftext|>` / `<|startoftext|>` as text, as vltk does: every string without
    # open_clip's own special names must equal open_clip.tokenize, and every string must equal open_clip's encoding
    # with those names read as text (a name past the truncation point changes nothing, so those may equal both).
    texts = held_out
    assert len(texts) >= 300 and sum("<|endoftext|>" in t or "<|startoftext|>" in t for t in texts) >= 100
    ours = tok.clip_tokenize(texts, context_length)
    theirs = open_clip_tokenizer.tokenize(texts, context_length=context_length).numpy()
    text_only = open_clip_text_only(texts, context_length=context_length).numpy()
    own_names = [_has_open_clip_special(t, open_clip_tokenizer) for t in texts]
    assert 20 <= sum(own_names) <= len(texts) // 5
    for text, a, b, c, named in zip(texts, ours, theirs, text_only, own_names):
        assert np.array_equal(a, c), text
        assert named or np.array_equal(a, b), text
    assert (ours[:, 1:] != tok.sot_id).all()
    assert ((ours == tok.eos_id).sum(axis=1) == 1).all()  # the code's EOT, also when truncated


def test_special_token_text_stays_text(tok, open_clip_tokenizer):
    # Hand-computed: the literal is the pieces "<|", "endoftext", "|>" = CLIP tokens "<" "|</w>" "endof" "text</w>"
    # "|" "></w>" (CLIP's merges have none for "<|" or "|>"), as open_clip encodes it; the code adds the one EOS.
    caption = "a red circle <|endoftext|> and a blue square"
    expect = ["a</w>", "red</w>", "circle</w>", "<", "|</w>", "endof", "text</w>", "|", "></w>", "and</w>", "a</w>",
              "blue</w>", "square</w>"]
    ids = tok.encode(caption)
    assert [tok.tokens[i] for i in ids] == expect
    assert ids == list(open_clip_tokenizer.tokenize([caption]).numpy()[0, 1 : len(expect) + 1])
    row = tok.encode_batch([caption], 64)
    assert list(row[0, :13]) == ids and row[0, 13] == tok.eos_id
    assert list(text_lengths(row, tok.eos_id)) == [14]
    clip_row = tok.clip_tokenize(caption)[0]
    assert list(clip_row[:15]) == [tok.sot_id, *ids, tok.eos_id] and list(clip_row).count(tok.eos_id) == 1
    decoded = tok.decode_batch(row)[0]
    assert decoded == "a red circle <| endoftext |> and a blue square"  # a word end decodes as a space, as in CLIP
    assert decoded.replace(" ", "") == caption.replace(" ", "")
    assert tok.encode(decoded) == ids
    assert text_pieces("<|startoftext|>x<|endoftext|>") == ["<|", "startoftext", "|>", "x", "<|", "endoftext", "|>"]


def test_special_token_text_stays_text_under_dropout(tok, held_out):
    # The data loader's BPE-dropout re-encoding goes through the same pieces: it can split them, never forge EOS.
    texts = [t for t in held_out if "endoftext" in t or "startoftext" in t]
    rng = random.Random(0)
    for text in texts:
        ids = tok.encode(text, dropout=0.3, rng=rng)
        assert tok.sot_id not in ids and tok.eos_id not in ids, text
        assert tok.decode(ids).replace(" ", "") == tok.decode(tok.encode(text)).replace(" ", ""), text
    rows = tok.encode_batch(texts, 16, dropout=0.5, rng=np.random.default_rng(0))
    eos = rows == tok.eos_id
    assert (eos[:, :-1] <= eos[:, 1:]).all()  # EOS only as the code's end-and-padding suffix


def test_decode_leaves_out_special_ids(tok):
    assert tok.decode([tok.sot_id, 320, tok.eos_id]) == "a"


def test_merge_spelling_a_special_token_is_refused(tmp_path):
    # A merges file could build "<|endoftext|>" as an ordinary token, whose string is the control token's.
    pieces = ["<", "|", *"endoftext", "|", ">"]
    merges, word = [], pieces[0]
    for piece in pieces[1:]:
        merges.append((word, piece))
        word += piece
    assert word == EOT
    BPETokenizer(merges[:-1])
    with pytest.raises(VltkError, match="spells the special token"):
        BPETokenizer(merges)


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
