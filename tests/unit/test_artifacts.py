"""The artifact contract (DESIGN.md): manifests with input hashes, atomic publish, no-op re-runs, --force."""

import dataclasses
import json
import os

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
