"""`vltk sample` end to end on tiny trained generators: every task of each generator, outputs, prompts, repeatability."""

from __future__ import annotations

import json

import pytest
from factories import tiny_encoded  # tests/smoke
from PIL import Image
from typer.testing import CliRunner

from vltk.cli import app

TINY = ["model.width=16", "model.depth=1", "model.heads=2", "train.steps=2", "train.batch_size=4",
        "train.log_every=1", "data.bpe_dropout=0.0"]


def run_cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    encoded = tiny_encoded(root)
    for kind in ("magvlt", "argvlt"):
        run_cli("train-gen", encoded, root / kind, "--model", kind, "--cpu", *sum((["--set", s] for s in TINY), []))
    return root


def lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind,task", [("magvlt", t) for t in ("t2i", "i2t", "it2it", "inpaint", "infill")]
                         + [("argvlt", t) for t in ("t2i", "i2t", "inpaint")])
def test_every_task(generators, kind, task):
    out = generators / f"{kind}-{task}"
    run_cli("sample", generators / kind, out, "--task", task, "--count", 3, "--cpu", "--set", "batch_size=2")
    rows = lines(out)
    assert [row["index"] for row in rows] == [0, 1, 2] and all(row["task"] == task for row in rows)
    for row in rows:
        with Image.open(out / row["file"]) as png:
            assert png.size == (16, 16)
        if task != "it2it":  # sampled for the val records: their captions are the references for scoring
            assert row["references"] and row["prompt"] == row["references"][0]
        assert (row["caption"] is not None) == (task in ("i2t", "it2it", "infill"))
    assert [row["seed"] for row in rows] == [0, 0, 2]  # one generator per batch, seeded by its first index
    assert (out / "grid.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contents"]["count"] == 3 and manifest["contents"]["generator"] == kind


def test_prompts_and_repeatability(generators):
    a, b = generators / "prompts-a", generators / "prompts-b"
    for out in (a, b):
        run_cli("sample", generators / "magvlt", out, "--prompt", "a red circle", "--prompt", "a blue square",
                "--cpu")
    assert [row["prompt"] for row in lines(a)] == ["a red circle", "a blue square"]
    assert all((a / row["file"]).read_bytes() == (b / row["file"]).read_bytes() for row in lines(a))


def test_user_errors(generators):
    result = CliRunner().invoke(app, ["sample", str(generators / "argvlt"), str(generators / "x"), "--task",
                                      "it2it"])
    assert result.exit_code == 2 and "argvlt cannot do it2it" in result.output
    result = CliRunner().invoke(app, ["sample", str(generators / "magvlt"), str(generators / "x"), "--task", "i2t",
                                      "--prompt", "a red circle"])
    assert result.exit_code == 2 and "--prompt is for t2i" in result.output
    result = CliRunner().invoke(app, ["sample", str(generators / "magvlt"), str(generators / "x"), "--split", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


@pytest.mark.parametrize("task", ["t2i", "i2t", "it2it"])
def test_score(generators, task):
    samples, out = generators / f"score-{task}-samples", generators / f"score-{task}"
    run_cli("sample", generators / "magvlt", samples, "--task", task, "--count", 4, "--cpu")
    run_cli("score", samples, out, "--no-meteor")
    metrics = json.loads((out / "metrics.json").read_text())
    count = len(lines(samples))  # up to 4: the tiny val split may hold fewer records
    assert metrics["task"] == task and metrics["count"] == count >= 3
    judge = metrics["judge"]["all"]
    assert judge["captions"] == count and 0 <= judge["whole"] <= 1
    if task == "t2i":  # the val prompts are shapes captions: the judge parses every one
        assert judge["parsed"] == 1.0
        heldout = [row for row in lines(samples) if row.get("heldout")]
        assert ("heldout" in metrics["judge"]) == bool(heldout)
    if task == "i2t":
        assert set(metrics["captions"]) >= {"BLEU-4", "CIDEr", "ROUGE-L"} and metrics["captions"]["METEOR"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contents"]["judge"] == metrics["judge"]
    report = (out / "report.html").read_text()
    # Self-contained: every picture inlined; the grid and each sample, the generator's curves, the whole chain.
    assert "src=\"data:image/png;base64," in report and "<img" in report and "src=\"images/" not in report
    assert report.count("data:image/png") == 1 + count + 1  # grid, samples, loss.png (the tokenizer is hand-made)
    for stage in ("sample", "train-gen", "encode", "shard", "synth"):
        assert f"<td>{stage}</td>" in report
