"""`vltk shard` end to end on a folder of good and broken files: counts, skips, read-back, determinism, parts, kills."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vltk.cli import app
from vltk.data.shards import decode_image, iter_samples
from vltk.errors import VltkError
from vltk.pipeline import shard as stage
from vltk.pipeline.shard import ShardConfig

SIZE = 32
# name -> why it must be skipped; every other image in the folder is valid and must be kept.
BROKEN = {
    "empty.jpg": "empty_file",
    "truncated.jpg": "truncated",
    "words.jpg": "not_an_image",
    "noise.png": "not_an_image",
    "tiny.png": "too_small",
    "uncaptioned.jpg": "missing_caption",
    "blank_caption.png": "empty_caption",
}


def _save(img: Image.Image, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """A folder of 12 valid images of many kinds (with captions) and the broken files of BROKEN."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    captions: dict[str, list[str]] = {}
    for i in range(12):
        name = f"{'sub/' if i % 3 == 0 else ''}good{i:02d}"
        arr = rng.integers(0, 256, (40 + 8 * i, 64, 3), dtype=np.uint8)
        kind = i % 6
        if kind == 0:
            _save(Image.fromarray(arr), root / f"{name}.jpg", quality=90)
        elif kind == 1:
            _save(Image.fromarray(arr).convert("CMYK"), root / f"{name}.jpg")
        elif kind == 2:
            _save(Image.fromarray(arr).convert("P"), root / f"{name}.png", transparency=3)
        elif kind == 3:
            _save(Image.fromarray(arr).convert("LA"), root / f"{name}.png")
        elif kind == 4:
            wide = arr[..., 0].astype("<u2") * 257
            _save(Image.frombytes("I;16", (wide.shape[1], wide.shape[0]), wide.tobytes()), root / f"{name}.png")
        else:
            exif = Image.Exif()
            exif[0x0112] = 6
            _save(Image.fromarray(arr), root / f"{name}.jpg", exif=exif.tobytes())
        captions[name.replace("/", "_")] = [f"picture {i} first caption", f"picture {i}, second caption"]
        (root / f"{name}.txt").write_text("\n".join(captions[name.replace("/", "_")]) + "\n\n")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[:2000])
    (root / "words.jpg").write_text("this is a text file with the wrong name")
    (root / "noise.png").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _save(Image.new("RGB", (4, 4)), root / "tiny.png")
    _save(Image.new("RGB", (32, 32)), root / "uncaptioned.jpg")
    _save(Image.new("RGB", (32, 32)), root / "blank_caption.png")
    for name in BROKEN:
        if name not in ("uncaptioned.jpg", "blank_caption.png"):
            (root / name).with_suffix(".txt").write_text("a caption for a broken file")
    (root / "blank_caption.txt").write_text("   \n")
    return root, captions


def _tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def _samples(out: Path) -> dict[str, tuple]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        s.key: (split, s.captions, s.image)
        for split in manifest["contents"]["splits"] for s in iter_samples(out, split)
    }


CFG = ShardConfig(size=SIZE, shard_size=4, val_fraction=0.25, image_format="png")


def test_cli_keeps_every_valid_image_and_lists_every_skip(mixed, tmp_path):
    src, captions = mixed
    out = tmp_path / "shards"
    args = ["shard", str(src), str(out), "--size", str(SIZE), "--shard-size", "4", "--val-fraction", "0.25"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    expected_skips = {reason: list(BROKEN.values()).count(reason) for reason in set(BROKEN.values())}
    assert contents["skipped"] == expected_skips
    assert (contents["image_size"], contents["image_format"], contents["source_format"]) == (SIZE, "jpeg", "folder")
    splits = contents["splits"]
    assert set(splits) == {"train", "val"} and splits["train"]["samples"] + splits["val"]["samples"] == len(captions)
    assert splits["train"]["captions"] + splits["val"]["captions"] == 2 * len(captions)
    train, val = splits["train"]["samples"], splits["val"]["samples"]
    assert contents["summary"].startswith(f"{train} train / {val} val images, 7 skipped (2 not_an_image, 1 ")
    logged = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert {entry["source"]: entry["reason"] for entry in logged} == BROKEN
    got = {s.key: s for split in splits for s in iter_samples(out, split)}
    assert set(got) == set(captions)
    for key, sample in got.items():
        assert list(sample.captions) == captions[key] and sample.ext == "jpg"
        assert decode_image(sample).size == (SIZE, SIZE)
    # A re-run with the same config and input is a no-op.
    before = (out / "manifest.json").read_bytes()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "is up to date" in " ".join(again.output.split())  # rich wraps at 80 columns
    assert (out / "manifest.json").read_bytes() == before


def test_output_bytes_do_not_depend_on_workers(mixed, tmp_path):
    src, _ = mixed
    one = stage.run(CFG, src, tmp_path / "one", workers=1)
    two = stage.run(CFG, src, tmp_path / "two", workers=2)
    assert len(_tars(one)) >= 3 and _tars(one) == _tars(two)
    assert (one / "skipped.jsonl").read_bytes() == (two / "skipped.jsonl").read_bytes()


def test_parts_combine_into_the_same_shard_set(mixed, tmp_path):
    src, _ = mixed
    single = stage.run(CFG, src, tmp_path / "single", workers=1)
    out = tmp_path / "parted"
    first = stage.run(CFG, src, out, workers=1, part=(1, 2))
    assert first == out / "parts" / "1-of-2.json" and not (out / "manifest.json").exists()
    assert stage.run(CFG, src, out, workers=1, part=(0, 2)) == out
    assert _samples(out) == _samples(single)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contents"]["skipped"] == json.loads((single / "manifest.json").read_text())["contents"]["skipped"]
    assert all(name.split("-")[1] in ("000", "001") for name in _tars(out))
    lines = sorted((out / "skipped.jsonl").read_text().splitlines())
    assert lines == sorted((single / "skipped.jsonl").read_text().splitlines())
    # Each part again is a no-op; the finished set is the same artifact a single run would have been.
    assert stage.run(CFG, src, out, workers=1, part=(1, 2)) == out
    assert stage.run(CFG, src, out, workers=1) == out


class Killed(Exception):
    pass


@pytest.mark.parametrize("part", [None, (0, 2)])
def test_a_run_killed_midway_leaves_no_manifest(mixed, tmp_path, monkeypatch, part):
    src, _ = mixed
    out = tmp_path / "killed"
    real_write, calls = stage.SplitWriter.write, []

    def dies_on_the_fourth(self, sample):
        calls.append(sample.key)
        if len(calls) == 4:
            raise Killed
        real_write(self, sample)

    with monkeypatch.context() as patch:
        patch.setattr(stage.SplitWriter, "write", dies_on_the_fourth)
        with pytest.raises(Killed):
            stage.run(CFG, src, out, workers=2, part=part)
    assert not (out / "manifest.json").exists() and not (out / "parts").exists()
    # The next run starts over and finishes.
    done = stage.run(CFG, src, out, workers=1, part=part)
    assert (done / "manifest.json").exists() if part is None else done.name == "0-of-2.json"


def test_source_split_is_kept_test_included(tmp_path):
    rows = [("a", "train"), ("b", "restval"), ("c", "val"), ("d", "test")]
    data = {"images": [{"filepath": "imgs", "filename": f"{name}.jpg", "split": split, "sentences": [{"raw": name}]}
                       for name, split in rows]}
    src = tmp_path / "src"  # the images' folder, an input: the output must lie outside it
    for name, _ in rows:
        _save(Image.new("RGB", (20, 20), (10, 20, 30)), src / "imgs" / f"{name}.jpg")
    (src / "dataset_coco.json").write_text(json.dumps(data))
    out = stage.run(ShardConfig(size=16), src / "dataset_coco.json", tmp_path / "shards", workers=1)
    splits = json.loads((out / "manifest.json").read_text())["contents"]["splits"]
    assert {split: s["samples"] for split, s in splits.items()} == {"train": 2, "val": 1, "test": 1}
    assert [s.key for s in iter_samples(out, "test")] == ["d"]


def test_the_image_folder_found_is_printed_and_recorded(tmp_path):
    coco = tmp_path / "coco"  # COCO 2017 as downloaded: annotations/ beside train2017/
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(3)],
            "annotations": [{"image_id": i, "caption": f"picture {i}"} for i in range(3)]}
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "captions_train2017.json").write_text(json.dumps(data))
    for i in range(3):
        _save(Image.new("RGB", (20, 20), (i, 20, 30)), coco / "train2017" / f"{i:012d}.jpg")
    out = tmp_path / "shards"
    result = CliRunner().invoke(app, ["shard", str(coco / "annotations" / "captions_train2017.json"), str(out),
                                      "--size", "16", "--workers", "1", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert f"images from {coco / 'train2017'}" in result.output.splitlines()
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    assert contents["image_root"] == str(coco / "train2017") and contents["splits"]["train"]["samples"] == 3


def test_keys_of_any_script_survive_the_tars(tmp_path):
    src = tmp_path / "src"
    for name in ("ä b", "猫", "हिन्दी"):
        _save(Image.new("RGB", (20, 20)), src / f"{name}.png")
        (src / f"{name}.txt").write_text("a cat")
    out = stage.run(ShardConfig(size=16, val_fraction=0.0), src, tmp_path / "shards", workers=1)
    assert [s.key for s in iter_samples(out, "train")] == ["ä_b", "हिन्दी", "猫"]  # sorted file names


def test_real_process_and_a_missing_source(mixed, tmp_path):
    src, captions = mixed
    out = tmp_path / "shards"
    run = subprocess.run([sys.executable, "-m", "vltk", "shard", str(src), str(out), "--size", "16", "--workers", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert sum(s["samples"] for s in json.loads((out / "manifest.json").read_text())["contents"]["splits"].values()) \
        == len(captions)
    missing = CliRunner().invoke(app, ["shard", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert missing.output.strip().splitlines() == [f"error: source not found: {tmp_path / 'nowhere'}"]
    assert not (tmp_path / "x").exists()


def _error(args: list) -> str:
    """The one line a failing `vltk shard` prints (after its progress bar), checked to be an error without traceback."""
    result = CliRunner().invoke(app, ["shard", *map(str, args), "--size", "16", "--workers", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    return result.output.strip().splitlines()[-1]


def test_a_source_without_usable_samples_is_an_error_that_publishes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error([empty, tmp_path / "a"]) == (
        f"error: {empty} holds no samples (read as a folder source); nothing was published")
    broken = tmp_path / "broken"
    _save(Image.new("RGB", (32, 32)), broken / "a.png")  # no a.txt
    (broken / "b.jpg").write_bytes(b"")
    (broken / "b.txt").write_text("an empty file")
    assert _error([broken, tmp_path / "b"]) == (
        f"error: no usable samples in {broken}: all 2 skipped (1 empty_file, 1 missing_caption; the first: a.png: "
        "missing_caption (no a.txt)); nothing was published")
    assert not any((tmp_path / name).exists() for name in ("a", "b"))


def test_all_parts_without_usable_samples_are_an_error(tmp_path):
    src = tmp_path / "src"
    for name in ("a.png", "b.png"):
        _save(Image.new("RGB", (32, 32)), src / name)  # neither has a caption
    out = tmp_path / "out"
    assert stage.run(CFG, src, out, workers=1, part=(1, 2)) == out / "parts" / "1-of-2.json"
    with pytest.raises(VltkError, match=r"^no usable samples in .*: all 2 skipped \(2 missing_caption; the first: a.png"):
        stage.run(CFG, src, out, workers=1, part=(0, 2))
    assert not (out / "manifest.json").exists()


def test_no_train_sample_is_an_error_but_no_val_sample_is_not(tmp_path):
    src = tmp_path / "src"
    data = {"images": [{"filepath": "imgs", "filename": f"{name}.jpg", "split": "val", "sentences": [{"raw": name}]}
                       for name in ("a", "b")]}
    for name in ("a", "b"):
        _save(Image.new("RGB", (20, 20)), src / "imgs" / f"{name}.jpg")
    (src / "dataset_coco.json").write_text(json.dumps(data))
    assert _error([src / "dataset_coco.json", tmp_path / "all-val"]) == (
        f"error: no train samples from {src / 'dataset_coco.json'} (0 train / 2 val images, 0 skipped): the training "
        "stages need some (see the source's own split, or --val-fraction); nothing was published")
    (src / "imgs" / "a.txt").write_text("a")
    (src / "imgs" / "b.txt").write_text("b")
    out = stage.run(ShardConfig(size=16, val_fraction=0.0), src / "imgs", tmp_path / "no-val", workers=1)
    splits = json.loads((out / "manifest.json").read_text())["contents"]["splits"]
    assert {split: s["samples"] for split, s in splits.items()} == {"train": 2, "val": 0}
