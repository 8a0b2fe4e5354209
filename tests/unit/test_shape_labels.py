"""The shapes data set's dense labels (vltk.data.shape_labels, written by `vltk synth shapes`): they agree with what
the judge finds in the image, follow the documented depth rule, and leave the images and captions as they were."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from vltk.data import depth, panoptic, shape_labels, shapes
from vltk.metrics.judge import detect
from vltk.pipeline.synth import SynthConfig, run

from tests.helpers import run_cli

# `vltk synth shapes OUT --count 12 --size 32 --seed 3` at b1a76d7, before the stage wrote labels: sha256 of these
# images, and of captions.jsonl (whose lines now end in the label keys; the keys it had come first, unchanged).
BEFORE_LABELS = {
    "images/000000.png": "f439a378f4d663e80fb777272a34ed65d284eaeab06bace8dcf7bf23a194dd6c",
    "images/000005.png": "ee37c7216649e5f8945787c2ee03b9086f231a7e7f65ee5f31c56c0fbcce8343",
    "images/000011.png": "90b9ddd9272b2a7a37040363b5388c3e309fd3367cb5354581ed5574c011c420",
    "captions.jsonl": "6969f3eeeb676d5c94d5229ed13e6b004548c529786a0e8445a7bdc60243696b",
}
OLD_KEYS = ("image", "captions", "split", "heldout", "objects")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return run(SynthConfig(count=12, size=40, seed=5, max_objects=3), tmp_path_factory.mktemp("synth") / "raw")


def test_images_and_captions_are_those_before_labels(tmp_path):
    out = tmp_path / "raw"
    run_cli("synth", "shapes", out, "--count", 12, "--size", 32, "--seed", 3)
    lines = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    old = "".join(json.dumps({k: r[k] for k in OLD_KEYS}) + "\n" for r in lines)
    hashes = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in BEFORE_LABELS if "/" in name}
    hashes["captions.jsonl"] = hashlib.sha256(old.encode()).hexdigest()
    assert hashes == BEFORE_LABELS


def test_panoptic_labels_agree_with_the_judge(folder):
    categories = {c["id"]: c for c in json.loads((folder / "manifest.json").read_text())["contents"]["categories"]}
    assert sorted(c["name"] for c in categories.values() if c["isthing"]) == sorted(shapes.SHAPES)
    for line in (folder / "captions.jsonl").read_text().splitlines():
        record = json.loads(line)
        size = 40
        with Image.open(folder / record["image"]) as image:
            found = detect(image)
        ids = panoptic.decode_png((folder / record["panoptic"]).read_bytes())
        assert ids.shape == (size, size) and (ids != panoptic.VOID).all()
        things = [s for s in record["segments_info"] if categories[s["category_id"]]["isthing"]]
        assert len(things) == len(found) == len(record["objects"])
        assert panoptic.segments_info(ids, record["segments_info"]) == record["segments_info"]  # areas are counts
        for segment, detection in zip(things, found):  # both in the scene's (row, col) order
            assert categories[segment["category_id"]]["name"] == detection.shape
            rows, cols = np.nonzero(ids == segment["id"])
            half = size // shapes.GRID
            assert set(rows // half) == {detection.row} and set(cols // half) == {detection.col}  # inside its cell


def test_depth_follows_the_rule(folder):
    record = json.loads((folder / "captions.jsonl").read_text().splitlines()[0])
    metres = depth.to_metres(depth.decode_png((folder / record["depth"]).read_bytes()))
    ids = panoptic.decode_png((folder / record["panoptic"]).read_bytes())
    plane = ids == shape_labels.BACKGROUND_SEGMENT
    top, bottom = shape_labels.PLANE_METRES
    # The floor: row r's centre (r + 0.5) / 40 of the way from the top's depth to the bottom's, to the millimetre.
    expected = top + (bottom - top) * (np.arange(40) + 0.5) / 40
    rows = np.nonzero(plane)[0]
    assert metres[plane] == pytest.approx(expected[rows], abs=0.0006)
    for segment, obj in zip(record["segments_info"][1:], record["objects"]):
        values = np.unique(metres[ids == segment["id"]])
        low, high = shape_labels.OBJECT_METRES[obj["size"]]
        assert len(values) == 1 and low <= values[0] <= high < bottom  # one card, in front of the floor
