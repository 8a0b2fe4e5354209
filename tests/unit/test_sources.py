"""vltk.data.sources: each format's reader on tiny hand-made fixtures, auto-detection, and clear errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from vltk import artifacts
from vltk.data.sources import Record, Skip, detect_format, open_source, sanitize_key
from vltk.errors import VltkError


def png(path: Path, colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def items(src: Path, **kw) -> list[Record | Skip]:
    return list(open_source(src, **kw).items())


def by_key(found: list[Record | Skip]) -> dict[str, Record | Skip]:
    return {item.key: item for item in found}


def test_folder_reads_images_with_same_named_captions(tmp_path):
    png(tmp_path / "b.png")
    (tmp_path / "b.txt").write_text("  a red square  \n\n   \nanother caption\n")
    png(tmp_path / "a" / "cat.1.jpg")
    (tmp_path / "a" / "cat.1.txt").write_text("a cat")
    png(tmp_path / "no_caption.png")
    png(tmp_path / "blank.png")
    (tmp_path / "blank.txt").write_text("  \n\n")
    png(tmp_path / "latin1.png")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "notes.md").write_text("not an image")
    source = open_source(tmp_path)
    assert source.format == "folder" and source.total == 5
    found = list(source.items())
    # os.walk order made deterministic: a folder's files (sorted), then its sorted subfolders.
    assert [item.source for item in found] == ["b.png", "blank.png", "latin1.png", "no_caption.png", "a/cat.1.jpg"]
    got = by_key(found)
    assert got["b"].captions == ("a red square", "another caption") and got["b"].split is None
    assert got["a_cat_1"].captions == ("a cat",) and got["a_cat_1"].image == tmp_path / "a" / "cat.1.jpg"
    assert got["no_caption"].reason == "missing_caption"
    assert got["blank"].reason == "empty_caption"
    assert got["latin1"].reason == "bad_caption"


def test_keys_stay_unique_when_names_collide(tmp_path):
    for name in ("x.png", "x.jpg", "x-1.png"):
        png(tmp_path / name)
    (tmp_path / "x.txt").write_text("shared caption")
    (tmp_path / "x-1.txt").write_text("own caption")
    keys = [item.key for item in items(tmp_path)]
    assert len(keys) == len(set(keys)) == 3
    assert keys == ["x-1", "x", "x-2"]  # sorted names: x-1.png, x.jpg, x.png; x-1 is taken, so the repeat is x-2


def coco_json(path: Path, extra_image: dict | None = None) -> Path:
    data = {
        "images": [{"id": 7, "file_name": "COCO_val2014_7.jpg"}, {"id": 3, "file_name": "COCO_val2014_3.jpg"},
                   {"id": 9, "file_name": "COCO_val2014_9.jpg"}] + ([extra_image] if extra_image else []),
        "annotations": [{"image_id": 3, "caption": "three a"}, {"image_id": 7, "caption": "seven"},
                        {"image_id": 3, "caption": " three b "}, {"image_id": 4, "caption": "four"}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_groups_captions_per_image_and_finds_the_sibling_image_folder(tmp_path):
    extra = {"id": 4, "file_name": "x.jpg", "split": "test"}
    ann = coco_json(tmp_path / "annotations" / "captions_val2014.json", extra)
    for name in ("COCO_val2014_7.jpg", "COCO_val2014_3.jpg", "x.jpg"):
        png(tmp_path / "val2014" / name)
    source = open_source(ann)
    assert source.format == "coco" and source.total == 4 and source.inputs["images"] == tmp_path / "val2014"
    found = list(source.items())
    assert [item.key for item in found] == ["COCO_val2014_7", "COCO_val2014_3", "COCO_val2014_9", "x"]
    seven, three, nine, x = found
    assert seven.captions == ("seven",) and seven.meta == {"id": 7} and seven.split is None
    assert three.captions == ("three a", "three b") and three.image == tmp_path / "val2014" / "COCO_val2014_3.jpg"
    assert nine.reason == "missing_caption"
    assert x.split == "test"


def test_coco_images_in_its_own_folder_or_named_explicitly(tmp_path):
    ann = coco_json(tmp_path / "captions_train.json")
    png(tmp_path / "COCO_val2014_7.jpg")
    assert open_source(ann).inputs["images"] == tmp_path
    elsewhere = tmp_path / "pictures"
    png(elsewhere / "COCO_val2014_7.jpg")
    assert items(ann, images=elsewhere)[0].image == elsewhere / "COCO_val2014_7.jpg"
    lonely = coco_json(tmp_path / "other" / "deep" / "captions_x.json")
    with pytest.raises(VltkError, match="--images"):
        open_source(lonely)


def test_karpathy_layout(tmp_path):
    data = {"images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "restval", "cocoid": 1, "sentences": [{"raw": "A dog."}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "test", "cocoid": 2,
         "sentences": [{"raw": "One."}, {"raw": "Two."}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "val", "cocoid": 3, "sentences": [{"raw": "C."}]},
        {"filepath": "train2014", "filename": "d.jpg", "split": "train", "cocoid": 4, "sentences": [{"raw": "D."}]},
    ], "dataset": "coco"}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    png(tmp_path / "val2014" / "a.jpg")
    found = items(tmp_path / "dataset_coco.json")
    assert [(r.key, r.split) for r in found] == [("a", "train"), ("b", "test"), ("c", "val"), ("d", "train")]
    assert found[1].captions == ("One.", "Two.") and found[0].meta == {"cocoid": 1}
    assert found[3].image == tmp_path / "train2014" / "d.jpg"


def karpathy_json(path: Path) -> Path:
    """Karpathy's dataset_coco.json: val2014 images first (as in his file), then train2014 ones."""
    rows = [("val2014", "COCO_val2014_1.jpg", "test"), ("val2014", "COCO_val2014_2.jpg", "restval"),
            ("train2014", "COCO_train2014_3.jpg", "train")]
    data = {"images": [{"filepath": folder, "filename": name, "split": split, "sentences": [{"raw": name}]}
                       for folder, name, split in rows], "dataset": "coco"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_2017(ann: Path) -> Path:
    data = {"images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
            "annotations": [{"image_id": 1, "caption": "one"}, {"image_id": 2, "caption": "two"}]}
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    return ann


# (captions file, the images it names, where they lie): the layouts people keep COCO in, 2014 and 2017.
LAYOUTS = {
    "images beside": ("captions.json", ["000000000001.jpg", "000000000002.jpg"], "images"),
    "2017 annotations/": ("annotations/captions_train2017.json", ["000000000001.jpg", "000000000002.jpg"],
                          "train2017"),
    "2017 under images/": ("annotations/captions_val2017.json", ["000000000001.jpg"], "images/val2017"),
    "2014 annotations/": ("annotations/captions_val2014.json", ["000000000001.jpg"], "val2014"),
    "2017 beside the JSON": ("captions_train2017.json", ["000000000002.jpg"], "train2017"),
    "karpathy in the root": ("dataset_coco.json", ["val2014/COCO_val2014_1.jpg"], ""),
    "karpathy in annotations/": ("annotations/dataset_coco.json", ["val2014/COCO_val2014_2.jpg"], ""),
    "karpathy, train2014 only": ("karpathy/dataset_coco.json", ["train2014/COCO_train2014_3.jpg"], ""),
    "karpathy, images/": ("caption_datasets/dataset_coco.json", ["val2014/COCO_val2014_1.jpg"], "images"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_coco_images_are_found_where_people_keep_them(tmp_path, layout):
    name, present, folder = LAYOUTS[layout]
    ann = (karpathy_json if "dataset_coco" in name else coco_2017)(tmp_path / name)
    for rel in present:
        png(tmp_path / folder / rel)
    source = open_source(ann)
    assert source.image_root == tmp_path / folder == source.inputs["images"]
    records = [r for r in source.items() if isinstance(r, Record)]
    assert any(r.image.is_file() for r in records) and all(r.image.is_relative_to(tmp_path / folder) for r in records)


def test_tables_find_an_images_folder_beside_them(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "a.png", "caption": "a"}) + "\n")
    (tmp_path / "d.tsv").write_text("image\tcaption\nmissing.png\tx\na.png\ta\n")
    png(tmp_path / "images" / "a.png")
    for table in ("d.jsonl", "d.tsv"):
        source = open_source(tmp_path / table)
        assert source.image_root == tmp_path / "images" == source.inputs["images"]
        assert [r.image for r in source.items()][-1] == tmp_path / "images" / "a.png"
    png(tmp_path / "a.png")  # the table's own folder comes first, and is not fingerprinted (it may be a home folder)
    source = open_source(tmp_path / "d.jsonl")
    assert source.image_root == tmp_path and "images" not in source.inputs


def test_images_found_nowhere_name_the_places_looked_in(tmp_path):
    ann = coco_2017(tmp_path / "coco" / "annotations" / "captions_train2017.json")
    with pytest.raises(VltkError) as err:
        open_source(ann)
    here, up = tmp_path / "coco" / "annotations", tmp_path / "coco"
    looked = [here, here / "images", here / "train2017", here / "images" / "train2017", up / "train2017",
              up / "images" / "train2017", up, up / "images"]
    assert str(err.value) == (f"cannot find the images of {ann}: looked in {', '.join(map(str, looked))} for "
                              "000000000001.jpg or 000000000002.jpg; pass --images FOLDER")
    (tmp_path / "t.tsv").write_text("image\tcaption\nx.png\ta\n")
    with pytest.raises(VltkError, match=f"^cannot find the images of .*t.tsv: looked in {tmp_path}, "):
        open_source(tmp_path / "t.tsv")


def test_tsv_with_default_columns_merges_consecutive_rows(tmp_path):
    (tmp_path / "data.tsv").write_text(
        "filepath\ttitle\tsplit\tsource_url\n"
        "img/1.jpg\tfirst caption\tval\thttp://a\n"
        "img/1.jpg\tsecond caption\tval\thttp://a\n"
        "img/2.jpg\tanother\ttrain\thttp://b\n"
        "img/3.jpg\tno split given\t\thttp://c\n"
    )
    png(tmp_path / "img" / "1.jpg")  # a table's image folder is the first place holding one of its first images
    found = items(tmp_path / "data.tsv")
    assert [(r.key, r.captions, r.split) for r in found] == [
        ("img_1", ("first caption", "second caption"), "val"), ("img_2", ("another",), "train"),
        ("img_3", ("no split given",), None)]
    assert found[0].image == tmp_path / "img" / "1.jpg" and found[0].meta == {"source_url": "http://a"}


def test_csv_with_custom_columns_and_image_root(tmp_path):
    (tmp_path / "meta.csv").write_text('pic,desc,caption\nx.png,"a, quoted caption",ignored\ny.png,plain,ignored\n')
    root = tmp_path / "pics"
    root.mkdir()
    found = items(tmp_path / "meta.csv", images=root, image_column="PIC", caption_column="desc")
    assert [(r.key, r.captions, r.image) for r in found] == [
        ("x", ("a, quoted caption",), root / "x.png"), ("y", ("plain",), root / "y.png")]
    with pytest.raises(VltkError, match="--image-column"):
        open_source(tmp_path / "meta.csv")  # no column named like an image path
    with pytest.raises(VltkError, match="--caption-column"):
        open_source(tmp_path / "meta.csv", image_column="pic", caption_column="nope")


def test_tsv_row_with_bad_bytes_is_skipped(tmp_path):
    (tmp_path / "t.tsv").write_bytes(b"image\tcaption\na.png\tok\nb.png\tbad \xff byte\n")
    png(tmp_path / "a.png")
    found = items(tmp_path / "t.tsv")
    assert found[0].captions == ("ok",) and found[1].reason == "bad_caption"


def test_jsonl_caption_lists_metadata_and_bad_lines(tmp_path):
    rows = [
        {"image": "a.png", "captions": ["one", "", "two"], "split": "val", "score": 0.5},
        {"image": "b.png", "caption": "single"},
        {"image": "c.png", "captions": "not a list but text"},
        {"image": "d.png", "captions": [1, 2]},
        {"image": "e.png"},
        {"caption": "no image"},
        {"image": "f.png", "caption": "x", "split": "holdout"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{broken json\n")
    png(tmp_path / "a.png")
    got = by_key(items(tmp_path / "d.jsonl"))
    assert got["a"].captions == ("one", "two") and got["a"].split == "val" and got["a"].meta == {"score": 0.5}
    assert got["b"].captions == ("single",) and got["c"].captions == ("not a list but text",)
    assert got["d"].reason == "bad_caption" and got["e"].reason == "missing_caption"
    assert got["d_jsonl_6"].reason == "bad_row" and got["d_jsonl_8"].reason == "bad_row"
    assert got["f"].reason == "unknown_split"


def test_synth_folder_is_read_as_jsonl_keeping_its_metadata(tmp_path):
    row = {"image": "images/000000.png", "captions": ["a red circle"], "split": "train", "heldout": True,
           "objects": [{"shape": "circle", "colour": "red"}]}
    (tmp_path / "captions.jsonl").write_text(json.dumps(row) + "\n")
    png(tmp_path / "images" / "000000.png")
    source = open_source(tmp_path)
    assert source.format == "jsonl"
    (record,) = source.items()
    assert record.key == "images_000000" and record.image == tmp_path / "images" / "000000.png"
    assert record.meta == {"heldout": True, "objects": [{"shape": "circle", "colour": "red"}]}


def write_tar(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


def img_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    return buf.getvalue()


def test_webdataset_tars_like_img2dataset(tmp_path):
    image = img_bytes()
    write_tar(tmp_path / "data-000.tar", [
        {"__key__": "000000000", "jpg": image, "txt": b"a caption", "json": json.dumps({"url": "http://x"}).encode()},
        {"__key__": "000000001", "png": image, "txt": b"line one\nline two"},
    ])
    write_tar(tmp_path / "data-001.tar", [
        {"__key__": "000000002", "webp": image, "json": json.dumps({"captions": ["from json"]}).encode()},
        {"__key__": "000000003", "jpg": image},
        {"__key__": "000000004", "txt": b"no image"},
        {"__key__": "000000005", "jpg": image, "txt": b"\xff\xfe"},
    ])
    found = items(tmp_path)  # a directory of tars
    assert open_source(tmp_path).format == "wds"
    got = by_key(found)
    assert got["000000000"].image == image and got["000000000"].captions == ("a caption",)
    assert got["000000000"].meta == {"url": "http://x"} and got["000000000"].source == "data-000.tar:000000000"
    assert got["000000001"].captions == ("line one", "line two")
    assert got["000000002"].captions == ("from json",)
    assert [got[k].reason for k in ("000000003", "000000004", "000000005")] == [
        "missing_caption", "missing_image", "bad_caption"]
    assert [i.key for i in items(tmp_path / "data-{000..001}.tar")] == [i.key for i in found]
    assert [i.key for i in items(tmp_path / "data-001.tar")] == [i.key for i in found[2:]]
    with pytest.raises(VltkError, match="not found"):
        open_source(tmp_path / "data-{000..002}.tar")


def test_a_corrupt_tar_is_one_skip(tmp_path):
    write_tar(tmp_path / "a.tar", [{"__key__": "k", "jpg": img_bytes(), "txt": b"fine"}])
    (tmp_path / "b.tar").write_bytes(b"\x00garbage" * 100)
    found = items(tmp_path)
    assert isinstance(found[0], Record) and found[1].reason == "bad_tar" and len(found) == 2


def test_auto_detection(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.tar").write_bytes(b"")
    for name in ("a.json", "b.tsv", "c.csv", "d.jsonl", "e.tar"):
        (tmp_path / name).write_text("")
    expected = {"f": "folder", "t": "wds", "a.json": "coco", "b.tsv": "tsv", "c.csv": "tsv", "d.jsonl": "jsonl",
                "e.tar": "wds", "shards-{00..10}.tar": "wds"}
    assert {name: detect_format(tmp_path / name) for name in expected} == expected


def test_unknown_or_missing_source_is_a_clear_error(tmp_path):
    (tmp_path / "data.parquet").write_text("")
    with pytest.raises(VltkError, match="folder, .json .COCO., .tsv/.csv, .jsonl, .tar") as err:
        open_source(tmp_path / "data.parquet")
    assert "--format" in str(err.value)
    with pytest.raises(VltkError, match="source not found"):
        open_source(tmp_path / "nothing.json")
    with pytest.raises(VltkError, match="unknown source format"):
        open_source(tmp_path, format="parquet")


def test_only_newlines_separate_captions_and_other_control_characters_become_spaces(tmp_path):
    png(tmp_path / "a.png")
    text = ("one\r\n"  # CRLF ends a line like LF
            "two\x0cthree\x0bfour\x1cfive\x1dsix\x1eseven\x85eight\u2028nine\u2029ten\n"  # splitlines would cut 9 times
            "\ttabbed  \x00 and\x7f  spaced\r\n"
            "\x0c\x1c\u2028\r\n")  # only control characters: an empty line, dropped
    (tmp_path / "a.txt").write_bytes(text.encode())
    png(tmp_path / "bom.png")
    (tmp_path / "bom.txt").write_bytes("\ufeffa caption from Notepad\r\n".encode())
    png(tmp_path / "controls.png")
    (tmp_path / "controls.txt").write_bytes("\x0c\x85\u2029\r\n\x1e\n".encode())
    got = by_key(items(tmp_path))
    assert got["a"].captions == ("one", "two three four five six seven eight nine ten", "tabbed and spaced")
    assert got["bom"].captions == ("a caption from Notepad",)
    assert got["controls"].reason == "empty_caption"


def test_caption_cleaning_is_the_same_in_every_format(tmp_path):
    rows = [{"image": "a.png", "captions": ["a\tred\r\ncircle", "\x85\u2028"]}, {"image": "b.png", "caption": "\x0b"}]
    (tmp_path / "d.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    png(tmp_path / "a.png")
    got = by_key(items(tmp_path / "d.jsonl"))
    assert got["a"].captions == ("a red circle",) and got["b"].reason == "empty_caption"


def test_keys_keep_letters_of_any_script():
    assert sanitize_key("Fotos/ä b.png") == "Fotos_ä_b_png"
    assert sanitize_key("a\u0308 b") == "ä_b"  # NFKC: a + combining diaeresis is the one letter ä
    assert sanitize_key("ＡＢ／c") == "AB_c"  # full-width letters and slash are the ASCII ones
    assert sanitize_key("猫が座る 2") == "猫が座る_2"
    assert sanitize_key("हिन्दी.txt") == "हिन्दी_txt"  # vowel signs and virama are marks, kept within the word
    assert sanitize_key("a\x00b\u2028c\n") == "a_b_c"
    assert sanitize_key("🎉🎊") == "item"


def test_keys_from_non_ascii_file_names_are_distinct_and_bounded(tmp_path):
    names = ["ä b", "ö b", "猫", "🎉", "🎊", "x" * 150 + "1", "x" * 150 + "2"]
    for name in names:
        png(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_text("a caption")
    keys = {item.source: item.key for item in items(tmp_path)}
    assert {keys[f"{name}.png"] for name in names[:3]} == {"ä_b", "ö_b", "猫"}
    assert {keys["🎉.png"], keys["🎊.png"]} == {"item", "item-1"}  # nothing left: the repeat gets a suffix
    long = [keys[f"{name}.png"] for name in names[5:]]
    assert long[0] != long[1] and all(len(k) == 100 and k.startswith("x" * 91 + "_") for k in long)


def test_an_artifact_without_image_caption_data_is_not_a_source(tmp_path):
    gen = tmp_path / "gen"
    job = artifacts.begin(gen, stage="train-gen", config={}, inputs={})
    png(job.work / "loss.png")  # a folder source would read it as an uncaptioned image
    job.publish({"summary": "a generator"})
    with pytest.raises(VltkError, match=f"^{gen} is a 'train-gen' artifact, not a data source "):
        open_source(gen)
    with pytest.raises(VltkError, match="'train-gen' artifact"):
        open_source(gen, format="folder")
    raw = tmp_path / "raw"  # a synth artifact is a data source
    job = artifacts.begin(raw, stage="synth", config={}, inputs={})
    png(job.work / "images" / "0.png")
    (job.work / "captions.jsonl").write_text(json.dumps({"image": "images/0.png", "caption": "a red circle"}) + "\n")
    job.publish({"summary": "one scene"})
    assert [r.captions for r in items(raw)] == [("a red circle",)]
    (tmp_path / "mine").mkdir()  # a user's own manifest.json is no vltk artifact: the folder is read as usual
    (tmp_path / "mine" / "manifest.json").write_text('{"stage": "holiday", "photos": 1}')
    png(tmp_path / "mine" / "a.png")
    (tmp_path / "mine" / "a.txt").write_text("a beach")
    assert [r.captions for r in items(tmp_path / "mine")] == [("a beach",)]
