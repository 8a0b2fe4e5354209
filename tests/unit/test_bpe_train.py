"""BPE training (hand-computed merges, a brute-force reference, early stop) and the `tokenize-text` stage end to end."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from vltk import artifacts
from vltk.config import load_config
from vltk.data.shards import Sample, SplitWriter
from vltk.errors import VltkError
from vltk.pipeline import tokenize_text as stage
from vltk.records import ShardsContents
from vltk.text.bpe import EOT, SOT, BPETokenizer, normalize
from vltk.text.train import BASE_VOCAB, count_words, learn_merges

# Sennrich et al. (2016)'s toy corpus, with CLIP's </w> on each word's last symbol.
SENNRICH = {"low": 5, "lower": 2, "newest": 6, "widest": 3}


def test_sennrich_merges_by_hand():
    # Initial pair counts: (e,s) 9, (s,t</w>) 9, (w,e) 8, (l,o) 7, (n,e) 6, (e,w) 6, (o,w</w>) 5, ...
    # 1. (e,s) 9 ties with (s,t</w>) 9; "e" < "s" wins.      2. (es,t</w>) 9.
    # 3. (l,o) 7 ((w,e) fell to 2: newest's "w e" became "w es").
    # 4-6. newest: (e,w), (n,e), (w,est</w>) all 6 -> (e,w); then (ew,est</w>) 6 beats (n,ew) 6 ("ew" < "n");
    #      then (n,ewest</w>).
    # 7. (lo,w</w>) 5.   8-10. widest at 3: (d,est</w>), (i,dest</w>), (w,idest</w>).
    # 11-13. lower = lo w e r</w> at 2: (e,r</w>), (lo,w) ("lo" < "w"), (low,er</w>).
    expected = [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w"), ("ew", "est</w>"), ("n", "ewest</w>"),
                ("lo", "w</w>"), ("d", "est</w>"), ("i", "dest</w>"), ("w", "idest</w>"),
                ("e", "r</w>"), ("lo", "w"), ("low", "er</w>")]
    assert learn_merges(SENNRICH, num_merges=100, min_frequency=1) == expected
    assert learn_merges(SENNRICH, num_merges=100, min_frequency=2) == expected  # every pair of "lower" occurs twice
    assert learn_merges(SENNRICH, num_merges=100, min_frequency=3) == expected[:10]  # early stop: nothing left at 3+
    assert learn_merges(SENNRICH, num_merges=4) == expected[:4]
    tok = BPETokenizer(expected[:10])
    assert [tok.tokens[i] for i in tok.encode("newest widest low lower")] == \
        ["newest</w>", "widest</w>", "low</w>", "lo", "w", "e", "r</w>"]


def test_count_words_uses_clip_normalisation_and_pre_split():
    # A special token's text is ordinary words, as encoding reads it.
    counts, seen = count_words(["It's a DOG,  a\tdog!!", "<|endoftext|> 42"])
    assert seen == 2
    assert counts == Counter({"it": 1, "'s": 1, "a": 2, "dog": 2, ",": 1, "!!": 1, "<|": 1, "endoftext": 1, "|>": 1,
                              "4": 1, "2": 1})


def test_training_never_learns_a_special_token():
    # Captions full of the literals: the pieces never join letters to '<|', so every merge runs to exhaustion
    # without spelling one; and words handed in directly that do hold one skip exactly that merge.
    captions = ["<|endoftext|>", "a<|endoftext|>b <|startoftext|>x", "<|startoftext|><|endoftext|>"] * 20
    merges = learn_merges(count_words(captions)[0], 1000, min_frequency=1)
    assert {a + b for a, b in merges} >= {"endoftext</w>", "startoftext</w>", "<|</w>"}
    assert not {a + b for a, b in merges} & {SOT, EOT}
    tok = BPETokenizer(merges)
    assert tok.eos_id not in tok.encode(" ".join(captions)) and tok.sot_id not in tok.encode(" ".join(captions))

    # Every pair of the one word ties at 5 and the smallest wins, so merges grow "<|endoftext|" left to right; then
    # ("<|endoftext|", ">") would win the tie with (">", "x</w>") ("<" < ">"), but it spells EOT and is skipped.
    forged = learn_merges({EOT + "x": 5}, 100, min_frequency=1)
    assert forged[10:] == [("<|endoftext", "|"), (">", "x</w>"), ("<|endoftext|", ">x</w>")]
    assert BPETokenizer(forged).tokens.count(EOT) == 1  # the special token's own id only


def brute_force_merges(word_counts: dict[str, int], num_merges: int, min_frequency: int) -> list[tuple[str, str]]:
    """The textbook trainer: recount every pair after every merge; highest count, then the smallest pair, wins."""
    words = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in word_counts}
    merges = []
    for _ in range(num_merges):
        counts = Counter()
        for w, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] += word_counts[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        merges.append(best)
        for w, symbols in words.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[w] = tuple(out)
    return merges


def random_corpus(n: int, seed: int, num_words: int = 150) -> list[str]:
    """`n` captions over `num_words` made-up words, the first words far more frequent than the last."""
    rng = random.Random(seed)
    syllables = ["ba", "na", "an", "ta", "ti", "to", "ra", "re", "ro", "sa", "aa", "nn", "st", "e", "o"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(num_words)]
    return [" ".join(rng.choice(vocab[: rng.randint(5, num_words)]) for _ in range(rng.randint(3, 12)))
            for _ in range(n)]


def test_incremental_counts_match_brute_force():
    # Repeated letters ("aa", "nn", "anan") exercise the overlapping-pair cases of the incremental update.
    words, _ = count_words(random_corpus(300, seed=0))
    assert learn_merges(words, 150, min_frequency=2) == brute_force_merges(words, 150, min_frequency=2)


def test_requested_vocab_size_is_reached_and_round_trips():
    captions = random_corpus(3000, seed=1, num_words=2000)
    words, _ = count_words(captions)
    merges = learn_merges(words, 400, min_frequency=2)
    tok = BPETokenizer(merges)
    assert tok.vocab_size == BASE_VOCAB + 400 == 914
    assert tok.eos_id == 913 and tok.sot_id == 912 and tok.sep_id == 91
    held_out = random_corpus(20, seed=2) + ["Unseen wörds, 123 & émoji 🙂 — still bytes!"]
    for text in held_out:
        assert tok.decode(tok.encode(text)).replace(" ", "") == normalize(text).replace(" ", "")
    # Training words become few tokens: on average well under one token per byte.
    ids = [tok.encode(c) for c in captions[:200]]
    assert sum(map(len, ids)) < 0.5 * sum(len(c.replace(" ", "")) for c in captions[:200])


def test_training_is_deterministic_and_order_free():
    captions = random_corpus(500, seed=3)
    first = learn_merges(count_words(captions)[0], 200)
    shuffled = captions[:]
    random.Random(0).shuffle(shuffled)
    assert learn_merges(count_words(shuffled)[0], 200) == first
    assert learn_merges(count_words(captions)[0], 200) == first


# ---- the stage


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def make_shards(out: Path, captions: list[tuple[str, ...]]) -> Path:
    """A shards artifact whose train split holds one sample per caption tuple (as `vltk shard` lays it out)."""
    job = artifacts.begin(out, stage="shard", config={"test": True}, inputs={})
    writer = SplitWriter(job.work, "train", 0, maxcount=7)
    image = png()
    for i, caps in enumerate(captions):
        writer.write(Sample(key=f"{i:06d}", image=image, ext="png", captions=caps, source=f"test/{i}", meta={}))
    names = writer.close()
    splits = {"train": {"samples": writer.samples, "captions": writer.captions, "shards": names}}
    return job.publish(ShardsContents(splits=splits, image_size=4, skipped={},
                                      extra={"image_format": "png", "summary": "test shards"}).to_dict())


SHAPE_WORDS = ["small", "large", "red", "green", "blue", "circle", "square", "triangle", "above", "below", "left of"]


def shape_captions(n: int, seed: int) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    return [tuple(f"a {rng.choice(SHAPE_WORDS)} {rng.choice(SHAPE_WORDS)} {rng.choice(SHAPE_WORDS)}" for _ in range(2))
            for _ in range(n)]


def test_stage_trains_publishes_and_reruns_as_noop(tmp_path):
    captions = shape_captions(30, seed=0)
    shards = make_shards(tmp_path / "shards", captions)
    cfg = stage.TextTokenizerConfig(vocab_size=560, context_length=32, min_frequency=2)
    out = stage.run(cfg, str(shards), tmp_path / "text-tok")

    manifest = artifacts.open_artifact(out, "tokenize-text")
    contents = manifest["contents"]
    expected_merges = learn_merges(count_words(c for caps in captions for c in caps)[0], 560 - BASE_VOCAB)
    num = len(expected_merges)
    assert contents["kind"] == "bpe" and contents["source"] == "trained"
    assert contents["num_merges"] == num and contents["vocab_size"] == BASE_VOCAB + num
    assert contents["eos_id"] == contents["pad_id"] == BASE_VOCAB + num - 1
    assert contents["sot_id"] == BASE_VOCAB + num - 2
    assert contents["sep_id"] == 91
    assert contents["context_length"] == 32 and contents["bpe_dropout"] == 0.1
    assert contents["training"]["captions"] == 60
    assert contents["training"]["unique_words"] == len(count_words(c for caps in captions for c in caps)[0])
    assert contents["summary"]
    assert artifacts.input_path(out, manifest, "source") == shards

    tok = BPETokenizer.from_artifact(out)
    assert list(tok.merges) == expected_merges
    assert tok.context_length == 32
    assert tok.decode_batch(tok.encode_batch(["A small RED circle"])) == ["a small red circle"]

    before = (out / "manifest.json").read_bytes()
    assert stage.run(cfg, str(shards), out) == out
    assert (out / "manifest.json").read_bytes() == before
    with pytest.raises(VltkError, match="different run"):
        stage.run(stage.TextTokenizerConfig(vocab_size=600), str(shards), out)


def test_stage_max_captions(tmp_path):
    shards = make_shards(tmp_path / "shards", shape_captions(20, seed=1))
    out = stage.run(stage.TextTokenizerConfig(vocab_size=520, max_captions=5), str(shards), tmp_path / "tok")
    assert artifacts.read_manifest(out)["contents"]["training"]["captions"] == 5


def test_stage_clip_source(tmp_path):
    pytest.importorskip("open_clip")
    out = stage.run(stage.TextTokenizerConfig(), "clip", tmp_path / "clip-tok")
    manifest = artifacts.read_manifest(out)
    contents = manifest["contents"]
    assert (contents["source"], contents["vocab_size"], contents["num_merges"]) == ("clip", 49408, 48894)
    assert (contents["eos_id"], contents["pad_id"], contents["sot_id"], contents["sep_id"]) == (49407, 49407, 49406, 91)
    assert "training" not in contents
    assert manifest["inputs"]["source"]["absolute"].endswith("open_clip/bpe_simple_vocab_16e6.txt.gz")
    tok = BPETokenizer.from_artifact(out)
    assert tok.vocab_size == 49408 and tok.context_length == 64


def test_stage_bad_inputs(tmp_path):
    cfg = stage.TextTokenizerConfig()
    with pytest.raises(VltkError, match="not found"):
        stage.run(cfg, str(tmp_path / "missing"), tmp_path / "out")
    with pytest.raises(VltkError, match="no caption words"):
        stage.run(cfg, str(make_shards(tmp_path / "empty", [(), ()])), tmp_path / "out")
    with pytest.raises(VltkError, match="vocab_size must be at least 514"):
        load_config(stage.TextTokenizerConfig, None, ["vocab_size=513"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"stage": "synth", "contents": {}}))
    with pytest.raises(VltkError, match="'synth' artifact"):
        stage.run(cfg, str(other), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_tokenize_text(tmp_path):
    from typer.testing import CliRunner

    from vltk.cli import app

    shards = make_shards(tmp_path / "shards", shape_captions(10, seed=2))
    result = CliRunner().invoke(app, ["tokenize", "text", str(shards), str(tmp_path / "tok"), "--vocab-size", "530"])
    assert result.exit_code == 0, result.output
    assert artifacts.read_manifest(tmp_path / "tok")["contents"]["vocab_size"] <= 530
    result = CliRunner().invoke(app, ["tokenize", "text", str(tmp_path / "nope"), str(tmp_path / "tok2")])
    assert result.exit_code == 2 and "not found" in result.output
