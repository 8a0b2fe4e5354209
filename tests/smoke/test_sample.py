"""`vltk sample` end to end on tiny trained generators: every task of each generator, outputs, prompts, repeatability,
candidates re-ranked by the generator itself and by a CLIP stand-in."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vltk.cli import app
from vltk.pipeline import score
from vltk.sampling import rerank

from tests.factories import artifact_files, copy_build
from tests.helpers import TINY_GEN, needs_java, run_cli, sets


@pytest.fixture(scope="module")
def generators(tiny_magvlt, tmp_path_factory):
    """The tiny MAGVLT as magvlt/ and an ARGVLT trained alike as argvlt/, beside their encoded data."""
    root = copy_build(tiny_magvlt, tmp_path_factory.mktemp("sample"))
    (root / "gen").rename(root / "magvlt")
    run_cli("train-gen", root / "encoded", root / "argvlt", "--model", "argvlt", "--cpu", *sets(*TINY_GEN))
    return root


def lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind,task", [("magvlt", t) for t in ("t2i", "i2t", "it2it", "inpaint", "infill", "joint")]
                         + [("argvlt", t) for t in ("t2i", "i2t", "inpaint")])
def test_every_task(generators, kind, task):
    out = generators / f"{kind}-{task}"
    run_cli("sample", generators / kind, out, "--task", task, "--count", 3, "--cpu", "--set", "batch_size=2")
    rows = lines(out)
    assert [row["index"] for row in rows] == [0, 1, 2] and all(row["task"] == task for row in rows)
    for row in rows:
        with Image.open(out / row["file"]) as png:
            assert png.size == (16, 16)
        if task not in ("it2it", "joint"):  # sampled for the val records: their captions are the references
            assert row["references"] and row["prompt"] == row["references"][0]
        if task == "joint":  # the prompt shows the record's caption with its central span in brackets
            assert row["references"] and kept_outside_brackets(row["prompt"], row["caption"])
        assert (row["caption"] is not None) == (task in ("i2t", "it2it", "infill", "joint"))
        # One candidate: nothing re-ranked, but the self score (mean log-prob per caption token) is there.
        assert row["candidates"] == 1 and row["rerank"] is None and "first_file" not in row
        assert -100 < row["score"] < 0
    assert [row["seed"] for row in rows] == [0, 0, 2]  # one generator per batch, seeded by its first index
    assert (out / "grid.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contents"]["count"] == 3 and manifest["contents"]["generator"] == kind


def kept_outside_brackets(prompt: str, caption: str) -> bool:
    """Whether `caption` keeps the words of `prompt` before its "[" and after its "]" (one bracketed span)."""
    before, rest = prompt.split("[")
    after = rest.split("]")[1].strip()
    return caption.startswith(before) and caption.endswith(after) and len(caption) > len(before) + len(after)


def test_joint_completes_bracketed_prompts_over_the_records_images(generators):
    out = generators / "joint-prompts"
    prompts = ["a small [red circle] above a blue square", "a [large] green triangle"]
    run_cli("sample", generators / "magvlt", out, "--task", "joint", *(a for p in prompts for a in ("--prompt", p)),
            "--cpu")
    rows = lines(out)
    assert [row["prompt"] for row in rows] == prompts
    assert all(kept_outside_brackets(row["prompt"], row["caption"]) for row in rows)
    assert all("key" in row and "references" not in row for row in rows)  # the records' images, not their captions
    # The judge reads each completed image against its completed caption; with no references, no caption metrics.
    run_cli("score", out, generators / "joint-prompts-scores", "--no-meteor")
    metrics = json.loads((generators / "joint-prompts-scores" / "metrics.json").read_text())
    assert metrics["judge"]["all"]["captions"] == 2 and "captions" not in metrics


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
    for kind in ("argvlt", "magvlt"):  # joint: MAGVLT only, and a prompt must bracket the words to regenerate
        result = CliRunner().invoke(app, ["sample", str(generators / kind), str(generators / "x"), "--task", "joint",
                                          "--prompt", "a red circle"])
        assert result.exit_code == 2 and result.output.strip().splitlines() == [
            "error: argvlt cannot do joint (it does t2i, i2t, inpaint)" if kind == "argvlt" else
            "error: prompt 1 of 1 ('a red circle') has no [bracketed] words: joint regenerates the words in brackets, "
            "e.g. 'a small [red circle] above a blue square'"]
    result = CliRunner().invoke(app, ["sample", str(generators / "magvlt"), str(generators / "x"), "--split", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


@pytest.mark.parametrize("prompts,culprit", [([""], "prompt 1 of 1 ('')"),
                                            (["a red circle", " \t\x0c\u2028"], r"prompt 2 of 2 (' \t\x0c\u2028')")])
def test_a_prompt_without_text_is_refused(tmp_path, prompts, culprit):
    # As `vltk shard` skips such captions; the config is checked before the generator is opened.
    args = ["sample", tmp_path / "gen", tmp_path / "out", *(arg for p in prompts for arg in ("--prompt", p))]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [f"error: {culprit} is empty: a prompt needs some text"]


@pytest.mark.parametrize("task", ["t2i", pytest.param("i2t", marks=needs_java), "it2it",
                                  pytest.param("joint", marks=needs_java)])
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
        assert metrics["judge"].get("seen", {"captions": 0})["captions"] + len(heldout) == count  # every synth row says which it is
    if task in ("i2t", "joint"):  # joint's val records hold references: the completed captions are scored too
        assert set(metrics["captions"]) >= {"BLEU-4", "CIDEr", "ROUGE-L"} and metrics["captions"]["METEOR"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contents"]["judge"] == metrics["judge"]
    report = (out / "report.html").read_text()
    # Self-contained: every picture inlined; the grid and each sample, the generator's curves, the whole chain.
    assert "src=\"data:image/png;base64," in report and "<img" in report and "src=\"images/" not in report
    assert report.count("data:image/png") == 1 + count + 1  # grid, samples, loss.png (the tokenizer is hand-made)
    for stage in ("sample", "train-gen", "encode", "shard", "synth"):
        assert f"<td>{stage}</td>" in report


def red(path) -> float:
    """The CLIP stand-in's score: the mean red intensity of a picture, in [0, 1]."""
    with Image.open(path) as png:
        return float(np.asarray(png.convert("RGB"))[..., 0].mean() / 255)


def test_candidates_keep_the_best_by_self_score(generators, monkeypatch):
    out = generators / "candidates-t2i"
    args = ["sample", generators / "magvlt", None, "--count", 2, "--candidates", 3, "--cpu", "--set", "batch_size=3"]
    run_cli(*[out if a is None else a for a in args])
    rows = lines(out)
    for row in rows:
        assert row["candidates"] == 3 and row["rerank"] == "self" and len(row["scores"]) == 3
        assert row["score"] == max(row["scores"]) == row["scores"][row["candidate"]]
        assert (out / row["first_file"]).is_file()
    assert [row["seed"] for row in rows] == [0, 3]  # a batch of 3 draws = one prompt's candidates, seeded by draw 3i
    manifest = json.loads((out / "manifest.json").read_text())["contents"]
    assert manifest["candidates"] == 3 and manifest["rerank"] == "self"
    # Forcing the choice of candidate k draws the same candidates and keeps candidate k: the kept file of the first
    # run is the candidate its scores chose.
    kept = {0: {row["index"]: (out / row["first_file"]).read_bytes() for row in rows}}
    for k in (1, 2):
        forced = generators / f"candidates-t2i-{k}"
        monkeypatch.setattr(rerank, "best", lambda scores, k=k: torch.full((scores.shape[0],), k))
        run_cli(*[forced if a is None else a for a in args])
        kept[k] = {row["index"]: (forced / row["file"]).read_bytes() for row in lines(forced)}
        assert all((forced / row["first_file"]).read_bytes() == kept[0][row["index"]] for row in lines(forced))
    assert all((out / row["file"]).read_bytes() == kept[row["candidate"]][row["index"]] for row in rows)


@pytest.mark.parametrize("kind", ["magvlt", "argvlt"])
def test_caption_candidates(generators, kind):
    out = generators / f"candidates-i2t-{kind}"
    run_cli("sample", generators / kind, out, "--task", "i2t", "--count", 2, "--candidates", 2, "--cpu")
    for row in lines(out):
        assert row["score"] == max(row["scores"]) and row["candidate"] in (0, 1)
        assert isinstance(row["first_caption"], str) and "first_file" not in row  # the image is the source
    assert not (out / "first").exists()


def test_clip_rerank_with_a_stand_in(generators, monkeypatch, tmp_path):
    """vltk.metrics.clip's contract (load_clip, clip_similarity), stood in for by a scorer of red pictures."""
    loaded = []
    fake = types.ModuleType("vltk.metrics.clip")
    fake.load_clip = lambda weights, arch="ViT-B-32-quickgelu", device="cpu": loaded.append((weights, arch)) or "clip"

    def clip_similarity(clip, images, texts):
        assert clip == "clip" and len(images) == len(texts) and all(isinstance(t, str) and t for t in texts)
        return torch.tensor([float(np.asarray(im)[..., 0].mean() / 255) for im in images])

    fake.clip_similarity = clip_similarity
    monkeypatch.setitem(sys.modules, "vltk.metrics.clip", fake)
    weights, out = tmp_path / "clip.safetensors", generators / "candidates-clip"
    weights.write_bytes(b"stand-in")
    run_cli("sample", generators / "magvlt", out, "--count", 2, "--candidates", 3, "--rerank", "clip", "--clip",
            weights, "--cpu")
    assert loaded == [(weights, "ViT-B-32-quickgelu")]  # the default arch: OpenAI's ViT-B/32
    for row in lines(out):
        assert row["rerank"] == "clip" and row["score"] == max(row["scores"])
        assert row["score"] == pytest.approx(red(out / row["file"]), abs=1e-6)
        assert row["scores"][0] == pytest.approx(red(out / row["first_file"]), abs=1e-6)


@pytest.mark.parametrize("flags,message", [
    (["--candidates", 2, "--rerank", "clip"], "needs open_clip weights: give --clip PATH"),
    (["--candidates", 2, "--task", "it2it"], "candidates must be 1"),
    (["--rerank", "clip", "--clip", "x.pt"], "give --candidates N with N > 1"),
    (["--rerank", "best"], "must be one of 'self', 'clip'"),
])
def test_candidate_errors(generators, flags, message):
    result = CliRunner().invoke(app, ["sample", str(generators / "magvlt"), str(generators / "x"),
                                      *map(str, flags)])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_compare_puts_generators_side_by_side(generators):
    scores = []
    knobs = {"magvlt": ["--set", "magvlt.guidance=2", "--candidates", 2], "argvlt": []}
    for kind in ("magvlt", "argvlt"):
        samples, out = generators / f"cmp-{kind}-samples", generators / f"cmp-{kind}"
        run_cli("sample", generators / kind, samples, "--count", 3, "--cpu", *knobs[kind])
        run_cli("score", samples, out, "--no-meteor")
        scores.append(out)
    run_cli("compare", *scores, generators / "cmp", "--title", "side by side")
    columns = json.loads((generators / "cmp" / "comparison.json").read_text())
    assert [c["generator"] for c in columns] == ["magvlt", "argvlt"]
    assert [c["label"] for c in columns] == ["t2i: magvlt tiny, 2 steps, w = 2.0, best of 2 by self",
                                              "t2i: argvlt tiny, 2 steps, w = 0.0"]  # sampler knobs that differ
    for column, out in zip(columns, scores):  # each column holds its own scores artifact's metrics, unchanged
        assert column["metrics"] == json.loads((out / "metrics.json").read_text())
    report = (generators / "cmp" / "report.html").read_text()
    assert "<h1>side by side</h1>" in report and report.count("data:image/png") == 2  # both grids, inlined
    assert "<td>judge.all.whole</td>" in report
    result = CliRunner().invoke(app, ["compare", str(generators / "cmp-missing")])
    assert result.exit_code == 2 and "output artifact" in result.output


def test_score_reports_candidate_zero_beside_the_reranked(generators):
    samples, out = generators / "rr-samples", generators / "rr-scores"
    run_cli("sample", generators / "magvlt", samples, "--count", 3, "--candidates", 3, "--cpu")
    run_cli("score", samples, out, "--no-meteor")
    metrics = json.loads((out / "metrics.json").read_text())
    rows = lines(samples)
    # judge_first is the judge of candidate 0's images (first/), judge that of the kept ones (images/)
    first = [{**row, "file": row["first_file"]} for row in rows]
    assert metrics["judge_first"] == score.judge(first, samples, "prompt")
    assert metrics["judge"] == score.judge(rows, samples, "prompt")
    assert "without re-ranking" in json.loads((out / "manifest.json").read_text())["contents"]["summary"]


def test_a_killed_run_resumes_its_missing_batches(generators, monkeypatch):
    """A run that dies after its first batch leaves that batch in OUT.partial; the next run draws only the others and
    writes what an uninterrupted run writes, file for file."""
    flags = ["--task", "t2i", "--count", 3, "--cpu", "--set", "batch_size=2", "--set", "candidates=2"]
    run_cli("sample", generators / "magvlt", generators / "whole", *flags)
    from vltk.errors import VltkError
    from vltk.sampling import generate

    drawn, real = [], generate.sample_batch

    def dies_after_one(*args, **kwargs):
        if drawn:
            raise VltkError("killed")
        drawn.append(args[3])
        return real(*args, **kwargs)

    out = generators / "resumed"
    monkeypatch.setattr(generate, "sample_batch", dies_after_one)
    result = CliRunner().invoke(app, ["sample", str(generators / "magvlt"), str(out), *map(str, flags)])
    assert result.exit_code == 2 and "killed" in result.output
    assert sorted(p.name for p in (out.parent / "resumed.partial" / "batches").iterdir()) == ["0000000.json",
                                                                                               "0000000.npy"]
    drawn.clear()

    def counts(*args, **kwargs):
        drawn.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "sample_batch", counts)
    assert "resuming" in run_cli("sample", generators / "magvlt", out, *flags)
    assert drawn == [2, 2]  # 6 draws in batches of 2: the first was on disk
    assert artifact_files(generators / "whole") == artifact_files(out) and not (out.parent / "resumed.partial").exists()
