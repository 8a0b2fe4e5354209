"""`vltk score` with FID / IS and CLIP score end to end, on tiny samples, with random-init Inception and CLIP files.

The re-ranked artifact is made by hand: its "first_file" images (candidate 0) are the real images of the same records,
so FID without re-ranking must be ~0, which checks that the real set is the one behind the samples.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from vltk.data.shards import decode_image, iter_samples
from vltk.errors import VltkError
from vltk.pipeline import score

from tests.factories import copy_build, random_inception, tiny_clip
from tests.helpers import needs_java, run_cli, sets


def rows(samples) -> list[dict]:
    return [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tiny_magvlt, tmp_path_factory):
    root = copy_build(tiny_magvlt, tmp_path_factory.mktemp("score-metrics"))
    for task in ("t2i", "i2t"):
        run_cli("sample", root / "gen", root / task, "--task", task, "--count", 4, "--cpu")
    # Re-ranked by hand: candidate 0 of each row is the real image of its record.
    shutil.copytree(root / "t2i", root / "reranked")
    lines = rows(root / "reranked")
    real = {s.key: decode_image(s) for s in iter_samples(root / "shards", "val")}
    (root / "reranked" / "first").mkdir()
    for line in lines:
        line["first_file"] = f"first/{line['index']:05d}.png"
        real[line["key"]].save(root / "reranked" / line["first_file"])
    (root / "reranked" / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    random_inception(root / "inception.pth")
    return root, {"inception": sets(f"inception_weights={root / 'inception.pth'}")}


@pytest.fixture(scope="module")
def clip(setup) -> list[str]:
    """The settings of a tiny random-init CLIP (its tests are skipped without open_clip, the `clip` extra)."""
    root, _ = setup
    arch, weights, _ = tiny_clip(root)
    return sets(f"clip_weights={weights}", f"clip_arch={arch}")


@pytest.mark.slow
def test_fid_is_and_clip_of_reranked_t2i(setup, clip):
    root, weights = setup
    out = root / "scores-reranked"
    run_cli("score", root / "reranked", out, *weights["inception"], *clip, *sets("is_splits=2"))
    metrics = json.loads((out / "metrics.json").read_text())
    count = metrics["count"]
    assert count >= 3
    chosen, first = metrics["images"], metrics["images_first"]
    for images in (chosen, first):
        assert images["n"] == count and images["inception_weights"] == "inception.pth"
        assert images["reference"]["images"] == count and images["reference"]["split"] == "val"
        assert math.isfinite(images["FID"]) and images["IS"]["mean"] >= 1 - 1e-6  # IS = exp(mean KL) >= 1
    # candidate 0 are the real images themselves: the same Gaussian, FID ~0 (the chosen images are not).
    assert chosen["FID"] > 0 and abs(first["FID"]) < 1e-3 * chosen["FID"]
    clip = metrics["CLIP score"]
    assert clip["arch"] == "vltk-tiny-clip" and set(clip) >= {"image_vs_prompt", "first_vs_prompt"}
    for pair in ("image_vs_prompt", "first_vs_prompt"):
        assert -1 <= clip[pair]["cosine"] <= 1 and clip[pair]["n"] == count
        assert clip[pair]["clipscore"] == pytest.approx(max(100 * clip[pair]["cosine"], 0), abs=0.01)
    report = (out / "report.html").read_text()
    assert "images.FID" in report and "images_first.IS.mean" in report and "CLIP score.image_vs_prompt.cosine" in report
    assert "FID" in json.loads((out / "manifest.json").read_text())["contents"]["summary"]


def test_unavailable_without_weights(setup):
    root, _ = setup
    out = root / "scores-plain"
    run_cli("score", root / "t2i", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == "unavailable: no inception_weights given" and "images_first" not in metrics
    assert metrics["CLIP score"] == "unavailable: no clip_weights given"
    assert "unavailable: no inception_weights given" in (out / "report.html").read_text()


@needs_java
def test_clip_of_captions(setup, clip):
    root, _ = setup
    out = root / "scores-i2t"
    run_cli("score", root / "i2t", out, "--no-meteor", *clip)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "images" not in metrics  # i2t generates no images
    clip = metrics["CLIP score"]
    assert set(clip) == {"arch", "clip_weights", "image_vs_caption", "image_vs_reference"}
    assert all(-1 <= clip[pair]["cosine"] <= 1 for pair in ("image_vs_caption", "image_vs_reference"))


def test_weight_errors(setup):
    root, _ = setup
    output = run_cli("score", root / "t2i", root / "x", *sets(f"inception_weights={root / 'nope.pth'}"), code=2)
    assert "inception weights not found" in output and "nope.pth" in output
    output = run_cli("score", root / "t2i", root / "y", *sets(f"clip_weights={root / 'nope.pt'}"), code=2)
    assert "clip weights not found" in output
    (root / "bad.pth").write_bytes(b"not torch")
    output = run_cli("score", root / "t2i", root / "z", *sets(f"inception_weights={root / 'bad.pth'}"), code=2)
    assert "bad.pth is not a weights file" in output and "Traceback" not in output


def test_real_set(setup):
    root, _ = setup
    manifest = json.loads((root / "t2i" / "manifest.json").read_text())
    lines = rows(root / "t2i")
    reference = score.real_set(root / "t2i", manifest, lines)
    assert reference.shards == root / "shards" and reference.split == "val" and reference.count == len(lines)
    real = {s.key: np.asarray(decode_image(s)) for s in iter_samples(root / "shards", "val")}
    assert sorted(a.tobytes() for a in reference.images()) == sorted(real[line["key"]].tobytes() for line in lines)
    missing = score.real_set(root / "t2i", manifest, [*lines, {**lines[0], "key": "no-such-key"}])
    with pytest.raises(VltkError, match="1 of the samples' records are not in the 'val' split"):
        list(missing.images())
    by_hand = [{k: v for k, v in line.items() if k != "key"} for line in lines]  # `vltk sample --prompt` rows
    assert score.real_set(root / "t2i", manifest, by_hand).startswith("unavailable: the prompts were given by hand")
    pairs = {**manifest, "contents": {**manifest["contents"], "task": "it2it"}}  # it2it: the split's first records
    first = score.real_set(root / "t2i", pairs, by_hand[:2])
    assert first.keys is None and len(list(first.images())) == 2
