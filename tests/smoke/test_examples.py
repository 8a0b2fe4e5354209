"""Every example in examples/ runs end to end at its tiny scale: the two bring-your-own-data walkthroughs (COCO JSON and
TSV, every stage through `vltk` processes) and the Python API script on tiny artifacts from tests/smoke/factories.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vltk import artifacts

from tests.factories import copy_build
from tests.helpers import needs_java

pytestmark = [pytest.mark.slow, needs_java]  # each example runs whole stages and scores captions

EXAMPLES = Path(__file__).parents[2] / "examples"
STAGES = ("shards", "text-tok", "image-tok", "encoded", "gen", "samples-t2i", "scores-t2i", "samples-i2t", "scores-i2t")


def run(*command: str | Path) -> str:
    # The examples call `vltk` and `python3`: this interpreter's environment comes first on the PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "SCALE": "tiny",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def check_pipeline(work: Path, source_format: str) -> None:
    assert all((work / stage / "manifest.json").is_file() for stage in STAGES)
    assert manifest(work / "shards")["contents"]["source_format"] == source_format
    assert artifacts.upstream(work / "gen", "encoded") == work / "encoded"
    for task in ("t2i", "i2t"):
        metrics = json.loads((work / f"scores-{task}" / "metrics.json").read_text())
        assert metrics["task"] == task and metrics["count"] == 4
    assert "CIDEr" in json.loads((work / "scores-i2t" / "metrics.json").read_text())["captions"]


def test_bring_your_own_coco(tmp_path):
    work = tmp_path / "coco"
    run("bash", EXAMPLES / "bring_your_own_coco.sh", work)
    coco = json.loads((work / "coco" / "annotations" / "captions_train2014.json").read_text())
    assert len(coco["images"]) == 32 and len(coco["annotations"]) >= 32
    check_pipeline(work, "coco")
    splits = manifest(work / "shards")["contents"]["splits"]  # no split in a COCO file: --val-fraction 0.2 decides
    assert splits["train"]["samples"] + splits["val"]["samples"] == 32 and splits["val"]["samples"] > 0


def test_bring_your_own_tsv(tmp_path):
    work = tmp_path / "tsv"
    run("bash", EXAMPLES / "bring_your_own_tsv.sh", work)
    rows = (work / "tsv" / "captions.tsv").read_text().splitlines()
    assert rows[0] == "image\tcaption\tsplit" and len(rows) > 33  # one row per caption
    check_pipeline(work, "tsv")
    synth = manifest(work / "raw")["contents"]["splits"]
    splits = manifest(work / "shards")["contents"]["splits"]  # the table's split column, not a hash
    assert {k: splits[k]["samples"] for k in ("train", "val")} == synth


def test_python_api(tiny_magvlt, tmp_path):
    copy_build(tiny_magvlt, tmp_path)  # the script samples and scores beside gen/
    out = tmp_path / "api"
    printed = run(sys.executable, EXAMPLES / "python_api.py", tmp_path, "--out", out, "--count", 3, "--cpu")
    assert sorted(p.name for p in out.glob("t2i-*.png")) == ["t2i-0.png", "t2i-1.png", "t2i-2.png"]
    assert manifest(out / "samples-i2t")["contents"]["count"] == 3 and "CIDEr" in printed
    assert artifacts.upstream(out / "scores-i2t", "samples") == out / "samples-i2t"
    missing = subprocess.run([sys.executable, EXAMPLES / "python_api.py", tmp_path / "nowhere"], capture_output=True,
                             text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no such artifact: {tmp_path / 'nowhere' / 'gen'}"
