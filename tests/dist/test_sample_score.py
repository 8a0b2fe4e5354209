"""`vltk sample` and `vltk score` under `accelerate launch` with two CPU processes give what one process gives: the
batches are shared out but each keeps the seed of its first draw, so the merged samples artifact is the same file for
file (UViM's dense label maps too); scoring shares the judge and Inception passes and gathers them in order, so the
metrics agree."""

from __future__ import annotations

import json

import pytest

from tests.dist.launching import run_vltk
from tests.factories import artifact_files, random_inception, tiny_encoded, tiny_uvim
from tests.helpers import TINY_GEN, sets


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """Its own build, not the shared tiny_magvlt: seed 4's val split holds the 5 records sampled here (the shared one's
    holds 3)."""
    root = tmp_path_factory.mktemp("dist-sample")
    run_vltk(["train-gen", tiny_encoded(root, seed=4), root / "gen", "--model", "magvlt", "--cpu", *sets(*TINY_GEN)], 1)
    return root


@pytest.mark.parametrize("task,settings", [
    ("t2i", ["count=5", "batch_size=3", "candidates=2"]),  # 10 draws in 4 batches; items straddle batches
    ("i2t", ["count=5", "batch_size=2", "magvlt.guidance=1.0"]),
])
def test_two_processes_sample_what_one_does(gen, task, settings):
    for processes in (1, 2):
        run_vltk(["sample", gen / "gen", gen / f"{task}-{processes}", "--task", task, "--cpu", *sets(*settings)],
                 processes)
    one, two = artifact_files(gen / f"{task}-1"), artifact_files(gen / f"{task}-2")
    assert one.keys() == two.keys() and len([k for k in one if k.startswith("images/")]) == 5
    assert one == two
    manifest = json.loads((gen / f"{task}-2" / "manifest.json").read_text())
    assert manifest["contents"]["processes"] == 2 and manifest["contents"]["count"] == 5
    assert not (gen / f"{task}-2.partial").exists()


def test_two_processes_sample_dense_maps_as_one_does(tmp_path):
    gen = tiny_uvim(tmp_path, "panoptic", "vae")
    for processes in (1, 2):  # 5 maps in batches of 2: process 0 draws batches 0 and 2, process 1 batch 1
        run_vltk(["sample", gen, tmp_path / f"dense-{processes}", "--task", "dense", "--split", "train", "--count", "5",
                  "--cpu",
                  *sets("batch_size=2")], processes)
    one, two = artifact_files(tmp_path / "dense-1"), artifact_files(tmp_path / "dense-2")
    assert len([k for k in one if k.startswith("panoptic/")]) == 5 and "panoptic.json" in one
    assert one == two
    manifest = json.loads((tmp_path / "dense-2" / "manifest.json").read_text())
    assert manifest["contents"]["processes"] == 2 and manifest["contents"]["count"] == 5


def test_two_processes_score_what_one_does(gen):
    samples = gen / "samples"
    run_vltk(["sample", gen / "gen", samples, "--task", "t2i", "--cpu", *sets("count=5", "candidates=2")], 1)
    random_inception(gen / "inception.pth")
    for processes in (1, 2):
        run_vltk(["score", samples, gen / f"scores-{processes}", "--cpu",
                  *sets(f"inception_weights={gen / 'inception.pth'}", "is_splits=2", "batch_size=2")], processes)
    one, two = (json.loads((gen / f"scores-{n}" / "metrics.json").read_text()) for n in (1, 2))
    assert one["judge"] == two["judge"] and one["judge_first"] == two["judge_first"]
    for images in ("images", "images_first"):  # the same features; batch shapes differ, so float rounding may too
        assert two[images]["n"] == two[images]["reference"]["images"] == 5
        assert two[images]["FID"] == pytest.approx(one[images]["FID"], rel=1e-4)
        assert two[images]["IS"] == pytest.approx(one[images]["IS"], rel=1e-4, abs=1e-6)
    assert (gen / "scores-2" / "report.html").is_file()
