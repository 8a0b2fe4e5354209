"""`vltk shard` with dense labels: a synth folder's panoptic and depth maps, COCO panoptic (panoptic_<split>.json with
its PNG folder) and NYU-style image / depth folder pairs are carried beside their images in the same pixels, validated,
and a broken label is skipped and listed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vltk.data import depth, panoptic
from vltk.data.images import ImageSpec
from vltk.data.labels import prepare_sample
from vltk.data.shards import DEPTH, PANOPTIC, SEGMENTS, decode_depth, decode_image, decode_panoptic, iter_samples
from vltk.data.sources import Labels
from vltk.metrics.judge import detect
from vltk.pipeline import synth

from tests.helpers import invoke, one_line_error, run_cli


def _png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _samples(out: Path) -> list:
    return [s for split in ("train", "val") for s in iter_samples(out, split)]


def test_synth_labels_ride_beside_their_images(tmp_path):
    raw = synth.run(synth.SynthConfig(count=10, size=32, seed=4, max_objects=3), tmp_path / "raw")
    (raw / "panoptic" / "000003.png").write_bytes(b"not a png")  # corrupt: skipped and listed
    out = tmp_path / "shards"
    run_cli("shard", raw, out, "--size", 32, "--image-format", "png", "--workers", 1)
    manifest = json.loads((out / "manifest.json").read_text())["contents"]
    assert manifest["skipped"] == {"bad_panoptic": 1} and manifest["categories"][0]["name"] == "circle"
    (skip,) = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert (skip["key"], skip["reason"]) == ("images_000003", "bad_panoptic")
    samples = _samples(out)
    assert len(samples) == 9
    for sample in samples:
        assert set(sample.labels) == {PANOPTIC, SEGMENTS, DEPTH}
        assert set(sample.meta) == {"heldout", "objects"}  # the label keys are members, not meta
        index = int(sample.key.rsplit("_", 1)[1])
        ids, segments = decode_panoptic(sample)
        assert (ids == panoptic.decode_png((raw / f"panoptic/{index:06d}.png").read_bytes())).all()  # same size: as is
        assert segments == json.loads((raw / "captions.jsonl").read_text().splitlines()[index])["segments_info"]
        assert (decode_depth(sample) == depth.decode_png((raw / f"depth/{index:06d}.png").read_bytes())).all()
        assert len(detect(decode_image(sample))) == len(segments) - 1


def test_resized_labels_keep_the_image_crop_and_nearest_values(tmp_path):
    """A 60x40 image whose left and right 10 columns are cut by the centre crop, resized to 20: each label must be cut
    at the same columns and keep only values it had (NEAREST), and the segment areas are counted again."""
    ids = np.zeros((40, 60), dtype=np.int64)
    ids[:, :10] = 70000  # only in the cropped-away margin: dropped from segments_info
    ids[:, 10:36] = 300
    ids[:, 36:] = 5  # column 36 starts an output pixel in both modes: 26 / 2 and 36 / 3
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, 36:] = 255
    units = np.repeat(np.arange(60, dtype=np.uint16)[None, :] * 1000 + 7, 40, axis=0)
    files = {"image": _png(image, tmp_path / "a.png"), "panoptic": tmp_path / "a.pan.png", "depth": tmp_path / "a.npy"}
    files["panoptic"].write_bytes(panoptic.encode_png(ids))
    np.save(files["depth"], units.astype(np.int32))
    segments = tuple({"id": i, "category_id": c} for i, c in ((70000, 1), (300, 2), (5, 3)))
    labels = Labels(panoptic=files["panoptic"], segments=segments, depth=files["depth"])
    for resize in ("center-crop", "pad"):
        spec = ImageSpec(size=20, resize=resize, image_format="png")
        encoded, members = prepare_sample((files["image"], labels), spec)
        got = panoptic.decode_png(members[PANOPTIC])
        with Image.open(io.BytesIO(encoded)) as img:
            bright = np.asarray(img)[..., 0] > 127
        inside = got != panoptic.VOID  # (pad's white margin is void)
        assert (bright[inside] == (got == 5)[inside]).all()  # the image's white part is exactly segment 5's
        assert set(np.unique(got)) <= {0, 300, 5, 70000}
        info = json.loads(members[SEGMENTS])
        assert {s["id"]: s["area"] for s in info} == {i: int((got == i).sum()) for i in np.unique(got) if i}
        metres = depth.decode_png(members[DEPTH])
        assert set(np.unique(metres)) <= {0, *np.unique(units).tolist()}
        if resize == "center-crop":  # columns 10..49 kept; output column j samples column 10 + 2 j + 1 (its centre)
            assert 70000 not in got and (metres[:, 0] == 11007).all() and (metres[:, -1] == 49007).all()
        else:  # 60x40 -> 20x13 centred: 3 void rows above, 4 below, in both maps
            assert (got[:3] == 0).all() and (got[-4:] == 0).all() and (metres[:3] == 0).all()
            assert (got[3:-4] != 0).all()


def test_a_label_of_another_size_or_bit_depth_is_skipped(tmp_path):
    spec = ImageSpec(size=16, image_format="png")
    image = _png(np.zeros((32, 32, 3), dtype=np.uint8), tmp_path / "a.png")
    small = tmp_path / "small.png"
    small.write_bytes(panoptic.encode_png(np.zeros((16, 32), dtype=np.int64)))
    assert prepare_sample((image, Labels(panoptic=small)), spec).reason == "label_size_mismatch"
    eight_bit = _png(np.zeros((32, 32), dtype=np.uint8), tmp_path / "d.png")
    assert prepare_sample((image, Labels(depth=eight_bit)), spec).reason == "bad_depth"
    assert prepare_sample((image, Labels(depth=tmp_path / "gone.png")), spec).reason == "missing_depth"
    unlisted = tmp_path / "u.png"
    unlisted.write_bytes(panoptic.encode_png(np.full((32, 32), 9, dtype=np.int64)))
    assert prepare_sample((image, Labels(panoptic=unlisted)), spec).reason == "bad_segments"


@pytest.fixture()
def coco_panoptic(tmp_path) -> Path:
    """COCO's layout: annotations/panoptic_val2017.json, its PNGs in annotations/panoptic_val2017/, captions in
    annotations/captions_val2017.json for one of the images, the pictures in val2017/."""
    ann = tmp_path / "annotations"
    categories = [{"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
                  {"id": 184, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0}]
    images, annotations = [], []
    for n in range(3):
        ids = np.full((24, 30), 0x0A0B0C if n else 7, dtype=np.int64)  # 0x0A0B0C = 658188 > 65535
        ids[5:15, 4:12] = 70001
        name = f"{n:012d}"
        _png(np.full((24, 30, 3), 40 * n, dtype=np.uint8), tmp_path / "val2017" / f"{name}.jpg")
        (ann / "panoptic_val2017").mkdir(parents=True, exist_ok=True)
        (ann / "panoptic_val2017" / f"{name}.png").write_bytes(panoptic.encode_png(ids))
        images.append({"id": n, "file_name": f"{name}.jpg", "width": 30, "height": 24})
        segments = [{"id": int(ids[0, 0]), "category_id": 184, "iscrowd": 0, "area": 640, "bbox": [0, 0, 30, 24]},
                    {"id": 70001, "category_id": 1 if n != 2 else 99, "iscrowd": 0, "area": 80, "bbox": [4, 5, 8, 10]}]
        annotations.append({"image_id": n, "file_name": f"{name}.png", "segments_info": segments})
    (ann / "panoptic_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    (ann / "captions_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": [{"image_id": 1, "id": 9, "caption": "a person under the sky"}]}))
    return ann / "panoptic_val2017.json"


def test_coco_panoptic_is_ingested_with_its_categories_and_captions(coco_panoptic, tmp_path):
    out = tmp_path / "shards"
    printed = run_cli("shard", coco_panoptic, out, "--size", 24, "--image-format", "png", "--workers", 1,
                      "--val-fraction", 0)
    assert "val2017" in printed  # the image folder found beside the annotations
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    assert contents["source_format"] == "coco-panoptic"
    assert [c["id"] for c in contents["categories"]] == [1, 184]
    assert contents["skipped"] == {"bad_segments": 1}  # image 2 names category 99
    samples = {s.key: s for s in _samples(out)}
    assert sorted(samples) == ["000000000000", "000000000001"]
    assert samples["000000000001"].captions == ("a person under the sky",) and samples["000000000000"].captions == ()
    ids, segments = decode_panoptic(samples["000000000001"])  # 30x24 centre-cropped to 24x24: columns 3..26
    assert ids.shape == (24, 24) and ids[5, 1] == 70001 and ids[0, 0] == 0x0A0B0C
    assert {s["id"]: (s["category_id"], s["area"], s["bbox"]) for s in segments} == {
        0x0A0B0C: (184, 24 * 24 - 80, [0, 0, 24, 24]), 70001: (1, 80, [1, 5, 8, 10])}


def test_coco_panoptic_without_its_png_folder_is_one_line(coco_panoptic):
    (coco_panoptic.parent / "panoptic_val2017").rename(coco_panoptic.parent / "elsewhere")
    one_line_error(invoke("shard", coco_panoptic, coco_panoptic.parent / "out"), "panoptic_val2017")


def test_nyu_style_image_and_depth_folders(tmp_path):
    for n in range(4):
        _png(np.full((24, 32, 3), 50 * n, dtype=np.uint8), tmp_path / "nyu/images" / f"{n:04d}.jpg")
    _png(np.full((24, 32), 2500, dtype=np.uint16), tmp_path / "nyu/depth/0000.png")  # millimetres
    np.save(tmp_path / "nyu/depth/0001.npy", np.full((24, 32), 1.25, dtype=np.float32))  # metres
    np.save(tmp_path / "nyu/depth/0002.npy", np.full((24, 30), 1.0, dtype=np.float32))  # not the image's size
    out = tmp_path / "shards"
    run_cli("shard", tmp_path / "nyu/images", out, "--depth", tmp_path / "nyu/depth", "--size", 16,
            "--workers", 1, "--val-fraction", 0)
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    assert contents["skipped"] == {"label_size_mismatch": 1, "missing_depth": 1}
    samples = {s.key: s for s in _samples(out)}
    assert set(samples) == {"0000", "0001"} and all(s.captions == () for s in samples.values())
    assert (decode_depth(samples["0000"]) == 2500).all() and (decode_depth(samples["0001"]) == 1250).all()
    assert decode_depth(samples["0000"]).shape == (16, 16)
    one_line_error(invoke("shard", tmp_path / "nyu/images", tmp_path / "o2", "--depth", tmp_path / "nope"),
                   "depth folder not found")
