"""Stage `tokenize-text`: a byte-level BPE text tokenizer, trained on a shards artifact's captions or taken from CLIP.

    vltk tokenize text build/demo/shards build/demo/text-tok --vocab-size 1024
    vltk tokenize text clip build/paper/text-tok          # CLIP's 49,408-token vocabulary (open_clip's copy)

The artifact holds `merges.txt` (a '#version' header, then one merge per line in rank order) and a manifest whose
contents give the vocabulary size and the ids later stages need (EOS = PAD, SOT, SEP), the context length, and the
BPE-dropout rate generator training should use. The tokenizer itself is deterministic; load it with
`BPETokenizer.from_artifact(path)`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
from pathlib import Path
from typing import Any, Iterator

from vltk import artifacts
from vltk.config import require_range
from vltk.data.shards import iter_samples
from vltk.errors import VltkError
from vltk.records import ShardsContents, Stage, TextTokenizerContents
from vltk.text.bpe import BPETokenizer
from vltk.text.train import BASE_VOCAB, count_words, learn_merges
from vltk.ui import progress

STAGE = Stage.TOKENIZE_TEXT
CLIP_FILE = "bpe_simple_vocab_16e6.txt.gz"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextTokenizerConfig:
    vocab_size: int = 1024  # training target: 512 byte tokens + merges + 2 specials (unused for CLIP's vocabulary)
    context_length: int = 64  # MAGVLT's text context (EOS-padded)
    min_frequency: int = 2  # stop training early when no pair occurs this often
    max_captions: int | None = None  # train on at most this many captions (None = all of the train split)
    bpe_dropout: float = 0.1  # recorded for generator training; never applied by the artifact itself

    def __post_init__(self) -> None:
        if self.vocab_size < BASE_VOCAB:
            raise ValueError(
                f"vocab_size must be at least {BASE_VOCAB} (512 byte tokens + 2 specials), got {self.vocab_size}"
            )
        require_range(self, "context_length", low=2)
        require_range(self, "min_frequency", *(("max_captions",) if self.max_captions is not None else ()))
        if not 0.0 <= self.bpe_dropout < 1.0:
            raise ValueError(f"bpe_dropout must be in [0, 1), got {self.bpe_dropout}")


def resolve_source(source: str) -> tuple[Path, str]:
    """(path, kind) for a source argument; kind is 'shards' or 'clip'."""
    if source == "clip":
        spec = importlib.util.find_spec("open_clip")  # finds the package without importing it (and torch with it)
        if spec is None or not spec.submodule_search_locations:
            raise VltkError("source 'clip' needs the open_clip_torch package; install it or pass the path of a "
                            f"CLIP {CLIP_FILE}")
        path = Path(next(iter(spec.submodule_search_locations))) / CLIP_FILE
        if not path.is_file():
            raise VltkError(f"the installed open_clip has no {CLIP_FILE} (looked for {path})")
        return path, "clip"
    path = Path(source)
    if not path.exists():
        raise VltkError(
            f"text tokenizer source not found: {path} (give a shards artifact, a CLIP {CLIP_FILE} or 'clip')"
        )
    if path.is_dir():
        artifacts.open_artifact(path, Stage.SHARD)
        return path, "shards"
    if path.name.endswith(".gz"):
        return path, "clip"
    raise VltkError(f"{path} is neither a shards artifact nor a CLIP {CLIP_FILE}")


def train_captions(shards: Path, limit: int | None) -> Iterator[str]:
    """Every caption of every sample of the train split, in shard order, at most `limit` of them."""
    captions = (c for sample in iter_samples(shards, "train", images=False) for c in sample.captions)
    return itertools.islice(captions, limit)


def train(cfg: TextTokenizerConfig, shards: Path) -> tuple[BPETokenizer, dict[str, Any]]:
    """A tokenizer trained on the shards' train captions, and the training statistics for the manifest."""
    available = ShardsContents.read(shards).splits.get("train", {}).get("captions")
    limits = [n for n in (available, cfg.max_captions) if n is not None]
    with progress("counting words", min(limits) if limits else None, "captions") as advance:
        words, seen = count_words(train_captions(shards, cfg.max_captions), advance)
    if not words:
        raise VltkError(f"{shards} has no caption words in its train split to train a text tokenizer on")
    num_merges = cfg.vocab_size - BASE_VOCAB
    with progress("learning merges", num_merges, "merges") as advance:
        merges = learn_merges(words, num_merges, cfg.min_frequency, advance)
    stats = {"captions": seen, "unique_words": len(words), "words": sum(words.values())}
    return BPETokenizer(merges, cfg.context_length), stats


def run(cfg: TextTokenizerConfig, source: str, out: Path, *, force: bool = False) -> Path:
    path, kind = resolve_source(source)
    job = artifacts.begin(out, stage=STAGE, config=cfg, inputs={"source": path}, force=force)
    if job is None:
        return out
    if kind == "clip":
        tok, training = BPETokenizer.from_clip_gz(path, cfg.context_length), None
        summary = f"CLIP vocabulary, {tok.vocab_size} tokens ({len(tok.merges)} merges), context {cfg.context_length}"
    else:
        tok, training = train(cfg, path)
        early = "" if tok.vocab_size == cfg.vocab_size else f" (stopped early: no pair seen {cfg.min_frequency}+ times)"
        summary = (f"BPE trained on {training['captions']} captions ({training['unique_words']} unique words): "
                   f"{tok.vocab_size} tokens{early}, context {cfg.context_length}")
    tok.save_merges(job.work / "merges.txt")
    about = {"kind": "bpe", "source": "clip" if kind == "clip" else "trained", "num_merges": len(tok.merges),
             **({"training": training} if training is not None else {}), "summary": summary}
    return job.publish(TextTokenizerContents(
        vocab_size=tok.vocab_size, context_length=cfg.context_length, eos_id=tok.eos_id, pad_id=tok.pad_id,
        sot_id=tok.sot_id, sep_id=tok.sep_id, bpe_dropout=cfg.bpe_dropout, extra=about).to_dict())
