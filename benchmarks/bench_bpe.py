"""Text tokenizer speed: vltk's CLIP BPE against open_clip's on the same captions, and BPE training time.

    python -m benchmarks.run --out build/bench/results.json --only bpe

Captions are synthetic but caption-like (5-16 words drawn Zipf-style from CLIP's whole-word tokens, some capitals,
digits and punctuation), 100k of them, seeded. Both tokenizers start with an empty cache and produce the same
(N, 77) CLIP rows, so the ratio compares like with like.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from vltk.text.bpe import WORD_END, BPETokenizer
from vltk.text.train import BASE_VOCAB, count_words, learn_merges

NUM_CAPTIONS = 100_000
TRAIN_VOCAB = 4096


def synthetic_captions(tok: BPETokenizer, n: int, seed: int = 0) -> list[str]:
    """`n` caption-like strings over the alphabetic whole-word tokens of `tok`."""
    rng = np.random.default_rng(seed)
    words = [t[: -len(WORD_END)] for t in tok.tokens if t.endswith(WORD_END) and t[: -len(WORD_END)].isalpha()
             and t[: -len(WORD_END)].isascii() and len(t) > len(WORD_END) + 1]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    picks = rng.choice(len(words), size=n * 16, p=zipf / zipf.sum())
    lengths = rng.integers(5, 17, size=n)
    extras = rng.random(size=(n, 3))
    captions, k = [], 0
    for i in range(n):
        caption = [words[j] for j in picks[k : k + lengths[i]]]
        k += lengths[i]
        if extras[i, 0] < 0.3:
            caption[0] = caption[0].capitalize()
        if extras[i, 1] < 0.2:
            caption.insert(len(caption) // 2, str(int(extras[i, 1] * 1000)))
        captions.append(" ".join(caption) + (", " if extras[i, 2] < 0.1 else "") + ("." if extras[i, 2] < 0.5 else ""))
    return captions


def _captions_per_second(fn, captions: list[str]) -> float:
    start = time.perf_counter()
    fn(captions)
    return len(captions) / (time.perf_counter() - start)


def run() -> dict:
    spec = importlib.util.find_spec("open_clip")
    gz = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    from open_clip.tokenizer import SimpleTokenizer

    captions = synthetic_captions(BPETokenizer.from_clip_gz(gz), NUM_CAPTIONS)
    reference = SimpleTokenizer(str(gz))
    ours = BPETokenizer.from_clip_gz(gz)
    open_clip_rate = _captions_per_second(lambda xs: reference(xs, context_length=77), captions)
    vltk_rate = _captions_per_second(lambda xs: ours.clip_tokenize(xs, 77), captions)
    magvlt_rate = _captions_per_second(BPETokenizer.from_clip_gz(gz).encode_batch, captions)  # a fresh cache too
    parity = bool(np.array_equal(reference(captions[:2000], context_length=77).numpy(),
                                 ours.clip_tokenize(captions[:2000], 77)))

    start = time.perf_counter()
    words, _ = count_words(captions)
    counted = time.perf_counter() - start
    merges = learn_merges(words, TRAIN_VOCAB - BASE_VOCAB, min_frequency=2)
    trained = time.perf_counter() - start
    return {
        "captions": NUM_CAPTIONS,
        "encode_clip_rows_captions_per_s": {"vltk": round(vltk_rate), "open_clip": round(open_clip_rate),
                                            "ratio": round(vltk_rate / open_clip_rate, 2)},
        "encode_magvlt_rows_captions_per_s": round(magvlt_rate),
        "parity_on_2000": parity,
        "train": {"vocab_size": BASE_VOCAB + len(merges), "unique_words": len(words),
                  "count_seconds": round(counted, 2), "total_seconds": round(trained, 2)},
    }
