"""The demo pipeline so far (synth -> shard -> tokenize text) as real processes, the way `make demo` runs it."""

import json
import subprocess
import sys

from vltk.data.shards import iter_samples
from vltk.text.bpe import BPETokenizer


def vltk(*args):
    proc = subprocess.run([sys.executable, "-m", "vltk", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_synth_shard_tokenize(tmp_path):
    raw, shards, tok = tmp_path / "raw", tmp_path / "shards", tmp_path / "text-tok"
    vltk("synth", "shapes", raw, "--count", 64, "--size", 32, "--seed", 3)
    vltk("shard", raw, shards, "--config", "stages/demo/shard.toml", "--workers", 1)
    vltk("tokenize", "text", shards, tok, "--config", "stages/demo/tokenize_text.toml")

    contents = json.loads((shards / "manifest.json").read_text())["contents"]
    splits = contents["splits"]
    assert splits["train"]["samples"] + splits.get("val", {}).get("samples", 0) == 64
    assert contents["image_size"] == 32 and sum(contents["skipped"].values()) == 0

    tokenizer = BPETokenizer.from_artifact(tok)
    sample = next(iter_samples(shards, "train"))
    ids = tokenizer.encode_batch(list(sample.captions))
    assert ids.shape == (len(sample.captions), 64)
    assert [tokenizer.decode(row) for row in ids] == [c.lower() for c in sample.captions]

    # Re-running a finished stage with the same inputs does nothing.
    assert "up to date" in vltk("shard", raw, shards, "--config", "stages/demo/shard.toml")
    info = subprocess.run([sys.executable, "-m", "vltk", "info", tok], capture_output=True, text=True)
    assert info.returncode == 0 and "vocab_size" in info.stdout + info.stderr
