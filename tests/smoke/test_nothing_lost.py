"""Nothing lost, as an adversarial user meets vltk: --force never deletes what vltk did not make, one writer per
output, a build folder that can be moved, broken files and a refusing file system give one line and leave nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vltk
from vltk.config import load_config
from vltk.errors import VltkError
from vltk.pipeline import shard, train_gen

from tests.factories import tiny_encoded
from tests.helpers import TINY_GEN, invoke, one_line_error


@pytest.fixture()
def imgs(tmp_path) -> Path:
    """A user's folder of 6 captioned pictures."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"picture number {i}\n")
    return folder


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. --force (the data-loss cases first)


def test_force_keeps_a_folder_vltk_did_not_make(imgs, tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    for force in ([], ["--force"]):
        one_line_error(invoke("shard", imgs, mine, "--size", 32, *force), "is not a vltk artifact")
    assert (mine / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "mydata"]


def test_force_never_deletes_the_stage_input_or_a_folder_holding_it(imgs, tmp_path, monkeypatch):
    before = listing(imgs)
    one_line_error(invoke("shard", imgs, imgs, "--size", 32, "--force"), "is the input")
    one_line_error(invoke("shard", imgs, tmp_path, "--size", 32, "--force"), "overlaps the input")
    monkeypatch.chdir(imgs)
    one_line_error(invoke("shard", ".", ".", "--force"), "is the input")
    one_line_error(invoke("shard", "../imgs", "..", "--force"), "overlaps the input")
    assert listing(imgs) == before
    # A finished artifact as input: replacing it with --force would have been allowed before the input check.
    assert invoke("shard", imgs, tmp_path / "shards", "--size", 32).exit_code == 0
    shards = listing(tmp_path / "shards")
    one_line_error(invoke("tokenize", "text", tmp_path / "shards", tmp_path / "shards", "--force"), "is the input")
    assert listing(tmp_path / "shards") == shards


def test_force_replaces_a_vltk_artifact(imgs, tmp_path):
    out = tmp_path / "shards"
    assert invoke("shard", imgs, out, "--size", 32).exit_code == 0
    one_line_error(invoke("shard", imgs, out, "--size", 24), "made by a different run", "--force")
    assert invoke("shard", imgs, out, "--size", 24, "--force").exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["contents"]["image_size"] == 24


# 2. one writer per output


HOLD = """
import sys, time
from vltk import artifacts
job = artifacts.begin(sys.argv[1], stage="shard", config={}, inputs={})
(job.work / "train-000000.tar").write_text("the first writer's tar")
print("ready", flush=True)
time.sleep(120)
"""


def test_a_second_shard_run_into_the_same_output_is_refused(imgs, tmp_path):
    out = tmp_path / "shards"
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "ready"
        for force in ([], ["--force"]):
            one_line_error(invoke("shard", imgs, out, "--size", 24, *force), f"process {first.pid} on")
        assert (tmp_path / "shards.partial" / "train-000000.tar").read_text() == "the first writer's tar"
    finally:
        first.kill()
        first.wait()
    assert invoke("shard", imgs, out, "--size", 24).exit_code == 0  # the lock died with its process


# 3. a build folder can be moved and used from anywhere


def test_a_moved_build_folder_samples_and_scores_from_any_directory(tmp_path, monkeypatch):
    build = tmp_path / "build"
    monkeypatch.chdir(tmp_path)
    # Built here, not copied from the shared tiny_magvlt: a copy's inputs would still be found at their absolute paths
    # when the relative ones fail, which is what this test must catch.
    encoded = tiny_encoded(Path("build"))  # relative paths, as `make demo` types them
    train_gen.run(load_config(train_gen.MAGVLTTrainConfig, None, TINY_GEN), encoded, Path("build/gen"), cpu=True)
    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    shutil.copytree(build, moved)
    shutil.rmtree(build)  # the original is gone: only the relative links can find the chain
    os.chdir(tmp_path / "elsewhere")
    result = invoke("sample", moved / "gen", moved / "samples", "--task", "t2i", "--count", 2, "--cpu")
    assert result.exit_code == 0, result.output
    result = invoke("score", moved / "samples", "scores", "--cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "elsewhere" / "scores" / "metrics.json").read_text())["count"] == 2


# 5. broken files and a refusing file system: one line, nothing half-written


@pytest.fixture()
def trained(tiny_magvlt) -> Path:
    return tiny_magvlt / "gen"  # shared: read only (a test that damages it damages a copy)


@pytest.mark.parametrize("harm", ["truncate", "random", "empty"])
def test_a_broken_weights_file_is_one_line(trained, tmp_path, harm):
    gen = tmp_path / "gen"
    shutil.copytree(trained, gen)  # moved on its own: it finds its inputs by their absolute paths
    weights = gen / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 3], "random": os.urandom(len(data)), "empty": b""}[harm])
    one_line_error(invoke("sample", gen, tmp_path / "samples", "--count", 2, "--cpu"), str(weights), "safetensors")
    assert not (tmp_path / "samples").exists() and not (tmp_path / "samples.partial").exists()


@pytest.mark.parametrize("text, why", [
    (b"[1, 2, 3]", "a JSON object is expected"), (b"null", "a JSON object is expected"),
    (b'{"stage": "shard"}', "'contents' is missing"), (bytes(range(256)) * 4, "not UTF-8"), (b"\x00{", "valid JSON"),
])
def test_a_broken_manifest_is_one_line_for_every_reader(imgs, tmp_path, text, why):
    out = tmp_path / "shards"
    assert invoke("shard", imgs, out, "--size", 32).exit_code == 0
    (out / "manifest.json").write_bytes(text)
    one_line_error(invoke("info", out), "manifest.json", why)
    one_line_error(invoke("tokenize", "text", out, tmp_path / "tok"), why)
    one_line_error(invoke("shard", imgs, out, "--size", 32, "--force"), "not a vltk artifact")  # no longer vltk's
    assert not (tmp_path / "tok").exists() and not (tmp_path / "tok.partial").exists()


def test_an_output_the_file_system_refuses_is_one_line(imgs, tmp_path):
    (tmp_path / "a-file").write_text("x")
    one_line_error(invoke("shard", imgs, tmp_path / "a-file" / "shards", "--size", 32), "a-file", "Not a directory")


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_full_or_read_only_disk_is_one_line_and_the_half_output_goes(imgs, tmp_path, monkeypatch, failure):
    write = shard.write_shards

    def write_then_fail(cfg, source, directory, **kw):
        write(cfg, source, directory, **kw)  # the tars are there, half a run's worth of disk
        raise OSError(failure, os.strerror(failure), str(directory / "train-000001.tar"))

    monkeypatch.setattr(shard, "write_shards", write_then_fail)
    one_line_error(invoke("shard", imgs, tmp_path / "shards", "--size", 32), "train-000001.tar", os.strerror(failure))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


@pytest.mark.parametrize("harm", ["missing", "not a picture"])
def test_a_missing_or_broken_sample_picture_is_one_line(trained, tmp_path, harm):
    samples = tmp_path / "samples"
    assert invoke("sample", trained, samples, "--task", "t2i", "--count", 2, "--cpu").exit_code == 0
    picture = samples / json.loads((samples / "samples.jsonl").read_text().splitlines()[1])["file"]
    picture.unlink() if harm == "missing" else picture.write_bytes(b"not a png")
    one_line_error(invoke("score", samples, tmp_path / "scores", "--cpu"), str(picture), "cannot be read as an image")
    assert not (tmp_path / "scores").exists() and not (tmp_path / "scores.partial").exists()
    with pytest.raises(VltkError, match="cannot be read as an image"):
        vltk.load(samples).images()
    (samples / "samples.jsonl").write_text('{"index": 0}\n')
    with pytest.raises(VltkError, match=r"samples.jsonl: line 1: the JSON has no 'file' field"):
        vltk.load(samples).rows
