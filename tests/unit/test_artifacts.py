"""The artifact contract (docs/architecture.md): manifests with input hashes, atomic publish, no-op re-runs, --force."""

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vltk import artifacts
from vltk.errors import VltkError


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig:
    n: int = 1


def make(out, cfg=ToyConfig(), inputs=None, force=False, payload="x"):
    job = artifacts.begin(out, stage="toy", config=cfg, inputs=inputs or {}, force=force)
    if job is None:
        return None
    (job.work / "data.txt").write_text(payload)
    return job.publish({"items": 1, "summary": "one item"})


def test_publish_writes_manifest_atomically(tmp_path):
    out = tmp_path / "art"
    assert make(out) == out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "toy" and manifest["config"] == {"n": 1}
    assert manifest["contents"]["items"] == 1 and manifest["vltk_version"]
    assert not (tmp_path / "art.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_rerun_is_noop_and_different_config_needs_force(tmp_path):
    out = tmp_path / "art"
    make(out)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert make(out) is None  # same config, same inputs: nothing to do
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(VltkError, match=r"differs in: config\.n.*--force"):
        make(out, ToyConfig(n=2))
    assert make(out, ToyConfig(n=2), force=True, payload="y") == out
    assert (out / "data.txt").read_text() == "y"
    assert json.loads((out / "manifest.json").read_text())["config"] == {"n": 2}


def test_inputs_are_hashed_and_a_changed_input_is_noticed(tmp_path):
    upstream, raw = tmp_path / "up", tmp_path / "raw.txt"
    make(upstream)
    raw.write_text("hello")
    out = tmp_path / "down"
    make(out, inputs={"up": upstream, "raw": raw})
    inputs = json.loads((out / "manifest.json").read_text())["inputs"]
    assert inputs["up"]["hash"] == artifacts.manifest_hash(upstream)
    assert "fingerprint" in inputs["raw"]
    assert make(out, inputs={"up": upstream, "raw": raw}) is None
    raw.write_text("changed!")
    with pytest.raises(VltkError, match="differs in: inputs"):
        make(out, inputs={"up": upstream, "raw": raw})


def test_a_killed_run_leaves_no_artifact_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "art"
    job = artifacts.begin(out, stage="toy", config=ToyConfig(), inputs={})
    (job.work / "half.txt").write_text("...")
    # the process dies here: no publish
    assert not out.exists()
    with pytest.raises(VltkError, match="no such artifact"):
        artifacts.read_manifest(out)
    assert make(out) == out
    assert not (out / "half.txt").exists() and not (tmp_path / "art.partial").exists()


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(VltkError, match="not a vltk artifact"):
        make(out)
    assert (out / "precious.txt").exists()


def test_open_artifact_checks_the_stage(tmp_path):
    out = tmp_path / "art"
    make(out)
    assert artifacts.open_artifact(out, "toy")["stage"] == "toy"
    with pytest.raises(VltkError, match="is a 'toy' artifact, but a 'shard' artifact is needed"):
        artifacts.open_artifact(out, "shard")
    os.remove(out / "manifest.json")
    with pytest.raises(VltkError, match="not a finished vltk artifact"):
        artifacts.open_artifact(out, "toy")


def test_resume_keeps_the_partial_work_of_the_same_run_only(tmp_path):
    out = tmp_path / "art"
    job = artifacts.begin(out, stage="toy", config=ToyConfig(), inputs={}, resume=True)
    assert not job.resumed
    (job.work / "checkpoint.txt").write_text("step 10")
    # killed here; the same run resumes and finds its work
    again = artifacts.begin(out, stage="toy", config=ToyConfig(), inputs={}, resume=True)
    assert again.resumed and (again.work / "checkpoint.txt").read_text() == "step 10"
    # a run with another config starts clean, and so does any run without resume
    other = artifacts.begin(out, stage="toy", config=ToyConfig(n=5), inputs={}, resume=True)
    assert not other.resumed and not (other.work / "checkpoint.txt").exists()
    (other.work / "checkpoint.txt").write_text("x")
    assert not artifacts.begin(out, stage="toy", config=ToyConfig(n=5), inputs={}).resumed
    fresh = artifacts.begin(out, stage="toy", config=ToyConfig(n=5), inputs={}, resume=True)
    fresh.publish({"summary": "done"})
    assert not (out / artifacts.RUN_RECORD).exists()


# --force replaces vltk's own artifacts and nothing else (issue: a user's folder, the stage's own input, ...).


def test_force_never_deletes_a_folder_vltk_did_not_make(tmp_path):
    out = tmp_path / "mydata"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    for force in (False, True):
        with pytest.raises(VltkError, match="is not a vltk artifact; vltk only replaces its own artifacts"):
            make(out, force=force)
    assert (out / "thesis.txt").read_text() == "years of work"
    assert not (tmp_path / "mydata.partial").exists()  # the refused run leaves nothing behind
    (out / "manifest.json").write_text('{"not": "a vltk manifest"}')  # a manifest of someone else's tool
    with pytest.raises(VltkError, match="not a vltk artifact"):
        make(out, force=True)
    assert (out / "thesis.txt").exists()


def test_the_output_may_not_be_or_overlap_an_input_even_with_force(tmp_path):
    raw = tmp_path / "raw"
    make(raw)  # a vltk artifact, so --force alone would have allowed replacing it
    (tmp_path / "raw" / "images").mkdir()
    for out, inp in [(raw, raw), (tmp_path, raw), (raw / "images" / "out", raw), (raw, raw / "images")]:
        for force in (False, True):
            with pytest.raises(VltkError, match=r"the output .* (is|overlaps) the input"):
                make(out, inputs={"source": inp}, force=force)
    assert (raw / "manifest.json").is_file() and (raw / "images").is_dir()


def test_the_output_may_not_be_the_working_directory_or_home_or_hold_them(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "home" / "project"
    work.mkdir(parents=True)
    make(work)  # even a finished artifact there is not replaced
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for out in (work, home, tmp_path, work.parent, work / ".."):
        with pytest.raises(VltkError, match="the working directory|the home folder"):
            make(out, ToyConfig(n=2), force=True)
    assert (work / "manifest.json").is_file()
    assert make(work / "sub") == work / "sub"  # below the working directory is fine


# One writer per output: an OS lock on <out>.partial that dies with its process.

HOLD = """
import sys, time
from vltk import artifacts
job = artifacts.begin(sys.argv[1], stage="toy", config={"n": 1}, inputs={})
(job.work / "mine.txt").write_text("first writer")
print("ready", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_with_the_first_ones_pid_and_host_until_it_dies(tmp_path):
    out = tmp_path / "art"
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "ready"
        for force in (False, True):
            with pytest.raises(VltkError) as err:
                make(out, force=force)
            assert f"being written by another run (process {first.pid} on {socket.gethostname()})" in str(err.value)
        assert (tmp_path / "art.partial" / "mine.txt").read_text() == "first writer"  # not wiped
    finally:
        first.kill()  # kill -9: no clean-up code runs, and the OS drops the lock
        first.wait()
    assert make(out, payload="second") == out
    assert (out / "data.txt").read_text() == "second" and not (out / "mine.txt").exists()


def test_a_run_that_failed_in_this_process_does_not_lock_out_the_next(tmp_path):
    out = tmp_path / "art"
    artifacts.begin(out, stage="toy", config=ToyConfig(), inputs={})  # raises half-way in real life: never published
    assert make(out) == out


def test_abandoning_removes_the_work_of_a_run_that_cannot_continue_and_keeps_a_resumable_one(tmp_path):
    once = artifacts.begin(tmp_path / "once", stage="toy", config=ToyConfig(), inputs={})
    long = artifacts.begin(tmp_path / "long", stage="toy", config=ToyConfig(), inputs={}, resume=True)
    (long.work / "checkpoint.txt").write_text("step 10")
    artifacts.abandon_open_jobs()
    assert not once.work.exists() and (long.work / "checkpoint.txt").is_file()
    again = artifacts.begin(tmp_path / "long", stage="toy", config=ToyConfig(), inputs={}, resume=True)
    assert again.resumed
    fresh = artifacts.begin(tmp_path / "long", stage="toy", config=ToyConfig(), inputs={}, resume=True, force=True)
    assert not fresh.resumed  # --force starts over


def test_an_up_to_date_run_leaves_no_partial_folder(tmp_path):
    make(tmp_path / "art")
    assert make(tmp_path / "art") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


# Portable artifacts: inputs are found relative to the artifact that names them.


def test_a_moved_build_folder_still_finds_its_inputs_from_any_directory(tmp_path, monkeypatch):
    build = tmp_path / "build"
    make(build / "up")
    monkeypatch.chdir(tmp_path)
    make(Path("build") / "down", inputs={"up": Path("build") / "up"})  # a relative path, as typed in a shell
    entry = json.loads((build / "down" / "manifest.json").read_text())["inputs"]["up"]
    assert entry["path"] == "../up" and entry["absolute"] == str(build / "up")
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    build.rename(moved)
    monkeypatch.chdir(moved / "up")
    assert artifacts.upstream(moved / "down", "up") == moved / "up"
    assert [p for p, _ in artifacts.provenance(moved / "down")] == [moved / "down", moved / "up"]
    # the moved chain is still the same run: re-running it is a no-op
    assert make(moved / "down", inputs={"up": moved / "up"}) is None


def test_an_artifact_moved_alone_finds_inputs_that_stayed_and_old_manifests_still_read(tmp_path, monkeypatch):
    make(tmp_path / "up")
    make(tmp_path / "a" / "down", inputs={"up": tmp_path / "up"})
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "down").rename(tmp_path / "b" / "c")  # ../up no longer points at it; the absolute path does
    assert artifacts.upstream(tmp_path / "b" / "c", "up") == tmp_path / "up"
    old = json.loads((tmp_path / "b" / "c" / "manifest.json").read_text())
    del old["schema"]
    old["inputs"]["up"] = {"path": "up", "hash": old["inputs"]["up"]["hash"]}  # schema 1: as typed, from cwd
    (tmp_path / "b" / "c" / "manifest.json").write_text(json.dumps(old))
    monkeypatch.chdir(tmp_path)
    assert artifacts.upstream(tmp_path / "b" / "c", "up") == Path("up")
    shutil.rmtree(tmp_path / "up")
    with pytest.raises(VltkError, match="the 'up' artifact up that .* was made from is gone"):
        artifacts.upstream(tmp_path / "b" / "c", "up")


# Manifests of the wrong shape are one line, whoever reads them.


@pytest.mark.parametrize("text, why", [
    ("[1, 2, 3]", "a JSON object is expected, not list"), ("null", "not NoneType"), ("{}", "names no stage"),
    ('{"stage": "toy", "config": {}, "inputs": {}}', "'contents' is missing"),
    ('{"stage": "toy", "contents": {}, "inputs": []}', "'inputs' is not an object"),
    ('{"stage": "toy", "config": {}, "contents": {}, "inputs": {"x": 3}}', "input 'x' has no path"),
    ('{"stage": "toy"', "not valid JSON"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line(tmp_path, text, why):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "manifest.json").write_text(text)
    with pytest.raises(VltkError, match=re.escape(why)):
        artifacts.read_manifest(tmp_path / "art")
    (tmp_path / "art" / "manifest.json").write_bytes(bytes(range(256)))
    with pytest.raises(VltkError, match="not UTF-8"):
        artifacts.read_manifest(tmp_path / "art")


def test_the_article_fits_the_stage_name(tmp_path):
    for stage in ("encode", "shard"):
        artifacts.begin(tmp_path / stage, stage=stage, config={}, inputs={}).publish({})
    with pytest.raises(VltkError, match=r"is an 'encode' artifact, but a 'shard' artifact is needed"):
        artifacts.open_artifact(tmp_path / "encode", "shard")
    with pytest.raises(VltkError, match=r"is a 'shard' artifact, but an 'encode' artifact is needed"):
        artifacts.open_artifact(tmp_path / "shard", "encode")
