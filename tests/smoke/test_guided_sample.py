"""Classifier-free guidance end to end: a tiny MAGVLT and a tiny ARGVLT trained with condition dropout, sampled with
guidance from the CLI (T2I with self re-ranking, I2T), and guidance's user errors."""

from __future__ import annotations

import json

import pytest

from tests.factories import copy_build
from tests.helpers import TINY_GEN, invoke, run_cli, sets


def manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("model", ["magvlt", "argvlt"])
def test_train_with_condition_dropout_then_sample_with_guidance(tiny_vq, tmp_path, model):
    gen = copy_build(tiny_vq, tmp_path) / "gen"
    run_cli("train-gen", tmp_path / "encoded", gen, "--model", model, "--cpu",
            *sets(*TINY_GEN, "objective.cond_dropout=0.5"))
    assert manifest(gen)["config"]["objective"]["cond_dropout"] == 0.5

    t2i = tmp_path / "t2i"
    run_cli("sample", gen, t2i, "--task", "t2i", "--count", 2, "--candidates", 2, "--cpu",
            "--set", f"{model}.guidance=2", "--set", f"{model}.guidance_schedule=linear")
    sampler = manifest(t2i)["config"][model]
    assert (sampler["guidance"], sampler["guidance_schedule"]) == (2.0, "linear")
    rows = [json.loads(line) for line in (t2i / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["rerank"] == "self" and len(row["scores"]) == 2 for row in rows)
    assert all(-100 < score < 0 for row in rows for score in row["scores"])  # the conditional self score

    i2t = tmp_path / "i2t"
    run_cli("sample", gen, i2t, "--task", "i2t", "--count", 2, "--cpu", "--set", f"{model}.guidance=2")
    assert all(isinstance(json.loads(line)["caption"], str) for line in (i2t / "samples.jsonl").read_text().splitlines())

    for flag, message in ((f"{model}.guidance=-1", "guidance must be >= 0"),
                          (f"{model}.guidance_schedule=cosine", f"{model}.guidance_schedule")):
        result = invoke("sample", gen, tmp_path / "bad", "--set", flag)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
