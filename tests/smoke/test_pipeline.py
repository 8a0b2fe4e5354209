"""The demo pipeline so far (synth -> shard -> tokenize text) as real processes, the way `make demo` runs it."""

import json
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from vltk.cli import app

from vltk.data.shards import iter_samples
from vltk.text.bpe import BPETokenizer


def vltk(*args):
    proc = subprocess.run([sys.executable, "-m", "vltk", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.mark.slow
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
    assert ids.shape == (len(sample.captions), 32)  # the demo context (stages/demo/tokenize_text.toml)
    assert [tokenizer.decode(row) for row in ids] == [c.lower() for c in sample.captions]

    # Re-running a finished stage with the same inputs does nothing.
    assert "up to date" in vltk("shard", raw, shards, "--config", "stages/demo/shard.toml")
    info = subprocess.run([sys.executable, "-m", "vltk", "info", tok], capture_output=True, text=True)
    assert info.returncode == 0 and "vocab_size" in info.stdout + info.stderr


def test_synth_through_the_runner_takes_its_options(tmp_path):
    out = tmp_path / "raw"
    result = CliRunner().invoke(
        app, ["synth", "shapes", str(out), "--count", "12", "--size", "48", "--heldout", "green square", "--objects", "1"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["heldout"] == ["green square"] and manifest["config"]["size"] == 48
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["objects"]) == 1 for r in rows)
    assert not any(r["split"] == "train" and (o["color"], o["shape"]) == ("green", "square")
                   for r in rows for o in r["objects"])
    bad = CliRunner().invoke(app, ["synth", "shapes", str(tmp_path / "bad"), "--heldout", "pink blob"])
    assert bad.exit_code == 2 and "pink" in bad.output


@pytest.mark.slow
def test_a_killed_shard_process_leaves_no_artifact(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "shards"
    vltk("synth", "shapes", raw, "--count", 3000, "--size", 32)
    proc = subprocess.Popen([sys.executable, "-m", "vltk", "shard", str(raw), str(out), "--size", "64",
                             "--image-format", "png", "--shard-size", "100", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "shards.partial"
    deadline = time.time() + 120
    while not list(partial.glob("*.tar")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the shard run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # only the .partial folder, which no stage takes for an artifact
    vltk("shard", raw, out, "--size", "64", "--image-format", "png", "--shard-size", "100")
    assert json.loads((out / "manifest.json").read_text())["contents"]["splits"]["train"]["samples"] > 0
    assert not partial.exists()
