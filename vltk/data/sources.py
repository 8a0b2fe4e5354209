"""Readers that turn an image-caption source into a deterministic stream of records, one per image.

    source = open_source(Path("annotations/captions_val2014.json"))   # format auto-detected: coco
    for item in source.items():   # Record(key, image, captions, split, meta, source) or Skip(key, source, reason)
        ...

Formats: `folder` (images + same-named .txt captions), `coco` (COCO captions JSON or Karpathy's dataset_coco.json),
`coco-panoptic` (COCO's panoptic_<split>.json with its PNG folder panoptic_<split>/ beside it; a .json whose
annotations hold `segments_info` is read as one), `tsv` (.tsv/.csv with a header), `jsonl` (one object per line; a
folder holding captions.jsonl, as `vltk synth shapes` writes, is read as jsonl) and `wds` (WebDataset tars, e.g.
img2dataset output). Sources stream: images are never read
here (records carry a path, or the bytes already in a tar), and only a COCO JSON's index is held in memory. A COCO,
TSV or JSONL source's image folder (`Source.image_root`) is the one given (`--images`), else the first of the places
people keep them (`image_root_candidates`) that holds one of the images it names. Every item
gets a unique key made from the source (sanitised relative path or file name) and clean captions (control characters
as spaces, whitespace collapsed, empty ones dropped); what cannot become a record is a `Skip` with a reason, in order,
so that the stage can count and list it.

Dense labels (`Labels`): a JSONL row may name its COCO panoptic PNG ("panoptic", with "segments_info") and its depth
map ("depth"), relative to the image folder, as synth writes them; a COCO panoptic source gives each image its PNG and
segments, and the captions of captions_<split>.json beside it when that file is there; `depth=FOLDER` pairs each image
of any file-based source with FOLDER/<its path, suffix .png or .npy> (NYU Depth v2 style). A record with labels may
have no caption (a folder image without .txt once `depth` is given, a panoptic image without captions).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import itertools
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator, Literal

from vltk.data.depth import SUFFIXES as DEPTH_SUFFIXES
from vltk.errors import VltkError
from vltk.records import Stage

Format = Literal["auto", "folder", "coco", "coco-panoptic", "tsv", "jsonl", "wds"]
FORMATS = ("folder", "coco", "coco-panoptic", "tsv", "jsonl", "wds")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_COLUMNS = ("image", "image_path", "filepath", "file", "path", "filename")
CAPTION_COLUMNS = ("caption", "text", "title", "captions")
# A source's own split names -> ours. Karpathy's "restval" is the rest of COCO val used for training.
SPLITS = {"train": "train", "restval": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SYNTH_INDEX = "captions.jsonl"
LABEL_KEYS = ("panoptic", "segments_info", "depth")  # a JSONL row's dense labels (vltk synth shapes writes them)
IMAGE_FOLDER = "images"  # the folder of pictures beside a captions file (vltk synth, many dataset downloads, LAVIS)
PROBES = 3  # image paths of a source looked for in each candidate folder
DATA_STAGES = (Stage.SYNTH, Stage.SHARD)  # the artifacts that hold images with captions (a shards artifact is tars)
KEY_LENGTH = 100  # characters; a longer key is cut and ends with a hash of the whole, so that it stays distinct
# What becomes a space inside a caption: C0 and C1 controls (tab, CR, form feed, NEL, ...), the line and paragraph
# separators, and U+FEFF (the byte-order mark an editor may put at the start of a .txt file).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


@dataclasses.dataclass(frozen=True)
class Labels:
    """A record's dense labels (GIVT §4.2's panoptic and depth tasks), as files to read or bytes from a tar."""

    panoptic: Path | bytes | None = None  # a COCO panoptic PNG (vltk.data.panoptic), in the image's pixels
    segments: tuple[dict[str, Any], ...] = ()  # its COCO segments_info
    depth: Path | None = None  # a 16-bit PNG of millimetres or an .npy (vltk.data.depth), in the image's pixels


@dataclasses.dataclass(frozen=True)
class Record:
    key: str  # unique in the source, safe as a WebDataset key
    image: Path | bytes  # a file to read, or the encoded bytes (from a tar)
    captions: tuple[str, ...]
    split: str | None  # "train" | "val" | "test", or None when the source has no split
    meta: dict[str, Any]
    source: str  # where it came from, relative to the source (shown in skipped.jsonl and kept in the shard)
    labels: Labels | None = None  # dense labels; a record with labels may have no caption (NYU, COCO panoptic)


@dataclasses.dataclass(frozen=True)
class Skip:
    key: str
    source: str
    reason: str
    detail: str = ""


Entry = Record | Skip  # what a source reads for one input: a record to shard, or why it is skipped


@dataclasses.dataclass(frozen=True)
class Source:
    format: str
    inputs: dict[str, Path]  # files and folders the output depends on (fingerprinted in the manifest)
    total: int | None  # number of items, when known without reading the whole source
    read: Callable[[], Iterator[Entry]]  # the raw items, before keys are made unique
    image_root: Path | None = None  # the folder the image paths are relative to (COCO, TSV, JSONL)
    categories: list[dict[str, Any]] | None = None  # COCO panoptic categories ({id, name, isthing, ...}), if known

    def items(self) -> Iterator[Entry]:
        """Every item in a deterministic order, with unique keys, clean captions and normalised splits."""
        return _finish(self.read())


def open_source(
    src: Path,
    format: Format = "auto",
    *,
    images: Path | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    depth: Path | None = None,
) -> Source:
    """The source at `src`, read as `format` (auto-detected from the path when "auto"); with `depth`, each record also
    gets the depth map of its image in that folder."""
    source = _open(Path(src), format, images, image_column, caption_column, uncaptioned=depth is not None)
    return source if depth is None else _with_depth(source, Path(depth))


def _open(src: Path, format: Format, images: Path | None, image_column: str | None, caption_column: str | None,
          uncaptioned: bool) -> Source:
    if format == "auto":
        format = detect_format(src)
    elif format not in FORMATS:
        raise VltkError(f"unknown source format {format!r} (use one of: {', '.join(FORMATS)})")
    if format != "wds" and not src.exists():
        raise VltkError(f"source not found: {src}")
    if images is not None and not Path(images).is_dir():
        raise VltkError(f"image folder not found: {images}")
    if src.is_dir():
        _refuse_artifact(src)
    if format == "folder":
        if not src.is_dir():
            raise VltkError(f"a folder source must be a directory: {src}")
        return _folder(src, uncaptioned)
    if format in ("coco", "coco-panoptic"):
        return _coco(src, images, panoptic=format == "coco-panoptic")
    if format == "wds":
        return _wds(src)
    table = src / SYNTH_INDEX if src.is_dir() else src
    if not table.is_file():
        raise VltkError(f"{src} is a directory; a {format} source is a file (or a folder holding {SYNTH_INDEX})")
    reader = _tsv if format == "tsv" else _jsonl
    return reader(table, Path(images) if images else None, image_column, caption_column)


def detect_format(src: Path) -> str:
    """The format a path most likely holds: see the module docstring for the rules."""
    name = src.name.lower()
    if src.is_dir():
        if (src / SYNTH_INDEX).is_file():
            return "jsonl"
        if any(p.suffix == ".tar" for p in src.iterdir()):
            return "wds"
        return "folder"
    if _is_brace_pattern(str(src)) or name.endswith(".tar"):
        return "wds"
    if not src.exists():
        raise VltkError(f"source not found: {src}")
    for suffixes, format in (((".json",), "coco"), ((".tsv", ".csv"), "tsv"), ((".jsonl",), "jsonl")):
        if name.endswith(suffixes):
            return format
    raise VltkError(
        f"cannot tell the format of {src}: expected a folder, .json (COCO), .tsv/.csv, .jsonl, .tar or a brace "
        f"pattern like data-{{000..009}}.tar; pass --format ({', '.join(FORMATS)})"
    )


def _refuse_artifact(src: Path) -> None:
    """An error when the folder `src` is a vltk artifact without image-caption data (a tokenizer, a generator, ...)."""
    try:
        manifest = json.loads((src / "manifest.json").read_text())
    except (OSError, ValueError):  # none, or a file of that name that is no vltk manifest
        return
    if isinstance(manifest, dict) and "vltk_version" in manifest and manifest.get("stage") not in DATA_STAGES:
        raise VltkError(f"{src} is a '{manifest.get('stage')}' artifact, not a data source (give images with "
                        f"captions: a {' or '.join(DATA_STAGES)} artifact, a folder, a COCO JSON, TSV, JSONL or tars)")


def sanitize_key(text: str) -> str:
    """'train/cats/001.jpg' -> 'train_cats_001_jpg', 'Fotos/Ä b.png' -> 'Fotos_Ä_b_png': letters, marks and digits of
    any script (NFKC-normalised), '-' and '_' are kept, any run of other characters becomes one '_' (WebDataset splits a
    member name at its first dot; '/' would make a folder), and the length is bounded by KEY_LENGTH."""
    runs = itertools.groupby(unicodedata.normalize("NFKC", text), key=_key_character)
    key = "".join("".join(chars) if kept else "_" for kept, chars in runs).strip("_") or "item"
    if len(key) <= KEY_LENGTH:
        return key
    return f"{key[:KEY_LENGTH - 9]}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _key_character(ch: str) -> bool:
    # Marks too: a Devanagari or Thai word is letters joined by vowel signs and viramas.
    return ch in "-_" or unicodedata.category(ch)[0] in "LMN"


def split_lines(text: str) -> list[str]:
    """The captions of a .txt file: one a line. Only '\\n' ends a line (CRLF's '\\r' is cleaned away with the other
    control characters); str.splitlines would also split at form feeds, '\\x1c'-'\\x1e', NEL and U+2028/9."""
    return text.split("\n")


def clean_caption(text: str) -> str:
    """The caption with control characters as spaces and each run of whitespace one space ('' when nothing is left)."""
    return " ".join(CONTROL.sub(" ", text).split())


def _finish(items: Iterable[Entry]) -> Iterator[Entry]:
    """Unique keys (a repeat gets the first free suffix -1, -2, ...), stripped captions, our split names."""
    seen: set[str] = set()
    for item in items:
        key = item.key
        if key in seen:
            key = next(k for n in itertools.count(1) if (k := f"{item.key}-{n}") not in seen)
        seen.add(key)
        if isinstance(item, Skip):
            yield dataclasses.replace(item, key=key)
            continue
        cleaned = (clean_caption(c) for c in item.captions if isinstance(c, str))
        captions = tuple(c for c in cleaned if c)
        split = SPLITS.get(str(item.split).lower()) if item.split else None  # a blank split cell means no split
        if not captions and item.labels is None:
            yield Skip(key, item.source, "empty_caption")
        elif item.split and split is None:
            yield Skip(key, item.source, "unknown_split", f"split {item.split!r} (known: {', '.join(SPLITS)})")
        else:
            yield dataclasses.replace(item, key=key, captions=captions, split=split)


@dataclasses.dataclass
class _Row:
    image: str  # as the source writes it, relative to the image root
    captions: list[str]
    split: Any
    meta: dict[str, Any]
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)  # LABEL_KEYS of a JSONL row, as written


def _folder(root: Path, uncaptioned: bool) -> Source:
    """Images and their .txt captions; `uncaptioned`: an image without one is a record with no caption."""
    def images() -> Iterator[Path]:
        for directory, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # os.walk's own order is the file system's
            for name in sorted(files):
                if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                    yield Path(directory) / name

    def read() -> Iterator[Entry]:
        for path in images():
            rel = path.relative_to(root).as_posix()
            key = sanitize_key(rel.rsplit(".", 1)[0])
            text = path.with_suffix(".txt")
            if not text.is_file():
                yield Record(key, path, (), None, {}, rel) if uncaptioned else Skip(
                    key, rel, "missing_caption", f"no {text.name}")
                continue
            try:
                captions = split_lines(text.read_bytes().decode("utf-8"))
            except UnicodeDecodeError as err:
                yield Skip(key, rel, "bad_caption", f"{text.name}: {err}")
                continue
            yield Record(key, path, tuple(captions), None, {}, rel)

    return Source("folder", {"source": root}, sum(1 for _ in images()), read)


def _coco(file: Path, images: Path | None, panoptic: bool) -> Source:
    data = _read_json(file)
    if _is_panoptic(data):
        return _coco_panoptic(file, data, images)
    if panoptic:
        raise VltkError(f"{file} is not a COCO panoptic JSON (needs 'categories' and annotations with 'segments_info')")
    entries = data.get("images") if isinstance(data, dict) else None
    annotations = data.get("annotations", []) if isinstance(data, dict) else None
    if not all(isinstance(x, list) and all(isinstance(e, dict) for e in x) for x in (entries, annotations)):
        raise VltkError(f"{file} is not a COCO captions JSON (needs an 'images' list of objects)")
    karpathy = "annotations" not in data
    if karpathy and entries and "sentences" not in entries[0]:
        raise VltkError(f"{file} has neither 'annotations' (COCO) nor images[].sentences (Karpathy's layout)")
    rows = _karpathy_rows(entries) if karpathy else _coco_rows(entries, annotations)
    root = Path(images) if images else find_image_root(file, _probe([row.image for row in rows if row is not None]))

    def read() -> Iterator[Entry]:
        for n, row in enumerate(rows):
            if row is None:
                yield Skip(f"image{n}", f"{file.name}:images[{n}]", "bad_row", "no file name")
                continue
            key = sanitize_key(row.image.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            if not row.captions:
                yield Skip(key, row.image, "missing_caption", "no caption for this image")
                continue
            yield Record(key, root / row.image, tuple(row.captions), row.split, row.meta, row.image)

    return Source("coco", {"source": file, "images": root}, len(rows), read, root)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VltkError(f"{file} is not valid JSON: {err}") from None


def _probe(named: list[str]) -> list[str]:
    """First, middle and last: Karpathy's file mixes train2014/ and val2014/ paths, and either folder may be missing."""
    return [named[i] for i in sorted({0, len(named) // 2, len(named) - 1})] if named else []


def _captions_by_image(annotations: list[dict[str, Any]]) -> dict[Any, list[str]]:
    """COCO captions annotations [{image_id, caption}] (several per image) -> {image_id: [caption, ...]}."""
    by_image: dict[Any, list[str]] = {}
    for a in annotations:
        by_image.setdefault(a.get("image_id"), []).append(a.get("caption", ""))
    return by_image


def _coco_rows(entries: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> list[_Row | None]:
    """COCO: images [{id, file_name, split?}], annotations [{image_id, caption}] (several per image)."""
    by_image = _captions_by_image(annotations)
    return [
        _Row(e["file_name"], by_image.get(e.get("id"), []), e.get("split"), {"id": e.get("id")})
        if isinstance(e.get("file_name"), str) else None
        for e in entries
    ]


def _karpathy_rows(entries: list[dict[str, Any]]) -> list[_Row | None]:
    """Karpathy: images [{filepath, filename, split, sentences: [{raw}], cocoid | imgid}]."""
    return [
        _Row(
            (Path(e.get("filepath", "")) / e["filename"]).as_posix(),
            [s.get("raw", "") for s in e.get("sentences", [])],
            e.get("split"),
            {k: e[k] for k in ("cocoid", "imgid") if k in e},
        )
        if isinstance(e.get("filename"), str) else None
        for e in entries
    ]


def _is_panoptic(data: Any) -> bool:
    """A COCO panoptic JSON: categories, and annotations that list segments_info (Kirillov et al. 2019's format)."""
    annotations = data.get("annotations") if isinstance(data, dict) else None
    return (isinstance(data.get("categories") if isinstance(data, dict) else None, list)
            and isinstance(annotations, list) and bool(annotations) and isinstance(annotations[0], dict)
            and "segments_info" in annotations[0])


def _coco_panoptic(file: Path, data: dict[str, Any], images: Path | None) -> Source:
    """COCO panoptic: images [{id, file_name}], annotations [{image_id, file_name (its PNG in panoptic_<split>/),
    segments_info}], categories [{id, name, isthing}]; captions from captions_<split>.json beside it if there."""
    categories, entries, annotations = data["categories"], data.get("images"), data["annotations"]
    if not isinstance(entries, list) or not all(isinstance(x, dict) for x in [*entries, *annotations, *categories]):
        raise VltkError(f"{file}: 'images', 'annotations' and 'categories' must be lists of objects")
    pngs = file.with_suffix("")
    if not pngs.is_dir():
        raise VltkError(f"the panoptic PNGs of {file} are not in {pngs} (COCO's {pngs.name}.zip unzips there)")
    known = {c.get("id") for c in categories}
    by_image = {a.get("image_id"): a for a in annotations}
    beside = file.with_name(file.name.replace("panoptic_", "captions_", 1))
    has_captions = file.name.startswith("panoptic_") and beside.is_file()
    captions = _captions_by_image(_read_json(beside).get("annotations", [])) if has_captions else {}
    named = [e["file_name"] for e in entries if isinstance(e.get("file_name"), str)]
    root = Path(images) if images else find_image_root(file, _probe(named))

    def read() -> Iterator[Entry]:
        for n, entry in enumerate(entries):
            name = entry.get("file_name")
            if not isinstance(name, str):
                yield Skip(f"image{n}", f"{file.name}:images[{n}]", "bad_row", "no file name")
                continue
            key = sanitize_key(name.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            ann = by_image.get(entry.get("id"), {})
            segments = ann.get("segments_info")
            if not isinstance(ann.get("file_name"), str) or not isinstance(segments, list):
                yield Skip(key, name, "missing_panoptic", "no panoptic annotation for this image")
                continue
            unknown = [s for s in segments if not isinstance(s, dict) or s.get("category_id") not in known]
            if unknown:
                yield Skip(key, name, "bad_segments", f"{str(unknown[0])[:80]}: no category_id of the categories")
                continue
            labels = Labels(panoptic=pngs / ann["file_name"], segments=tuple(segments))
            yield Record(key, root / name, tuple(captions.get(entry.get("id"), ())), None, {"id": entry.get("id")},
                         name, labels)

    inputs = {"source": file, "images": root, "panoptic": pngs, **({"captions": beside} if has_captions else {})}
    return Source("coco-panoptic", inputs, len(entries), read, root, categories)


def image_root_candidates(file: Path) -> list[Path]:
    """Where the images of the captions file `file` may lie, in the order they are tried: its folder and images/ in it;
    for COCO's captions_<name>.json (or panoptic_<name>.json) the folder <name>/ beside it or beside its folder,
    directly or under images/
    (annotations/captions_train2017.json beside train2017/ or images/train2017/); then the folder above it and
    images/ there (Karpathy's dataset_coco.json, whose paths start with train2014/ or val2014/, kept in annotations/ or
    a folder of its own). Absolute, so that the stage's report and errors say which folder."""
    here = Path(os.path.abspath(file)).parent
    up = here.parent
    names = [file.stem.split("_", 1)[1] for prefix in ("captions_", "panoptic_") if file.stem.startswith(prefix)]
    named = [folder / name for name in names for folder in (here, here / IMAGE_FOLDER, up, up / IMAGE_FOLDER)]
    return list(dict.fromkeys([here, here / IMAGE_FOLDER, *named, up, up / IMAGE_FOLDER]))


def find_image_root(file: Path, probe: list[str]) -> Path:
    """The first of `image_root_candidates(file)` that holds any of `probe` (image paths the source names); the file's
    folder when it names none. Any, not all: a missing image is one skip later, not a reason to look elsewhere."""
    candidates = image_root_candidates(file)
    if not probe:
        return candidates[0]
    for root in candidates:
        if any((root / rel).is_file() for rel in probe):
            return root
    raise VltkError(f"cannot find the images of {file}: looked in {', '.join(map(str, candidates))} for "
                    f"{' or '.join(probe)}; pass --images FOLDER")


def _pick(columns: Iterable[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    """The column named `wanted`, else the first candidate present (case-insensitive)."""
    by_lower = {c.lower(): c for c in columns}
    if wanted is not None:
        return by_lower.get(wanted.lower())
    return next((by_lower[c] for c in candidates if c in by_lower), None)


def _record(row: _Row, root: Path) -> Record:
    labels = None
    if row.labels:  # paths relative to the image folder, as the image's
        maps = {name: root / row.labels[name] for name in ("panoptic", "depth") if name in row.labels}
        labels = Labels(**maps, segments=tuple(row.labels.get("segments_info", ())))
    return Record(sanitize_key(row.image.rsplit(".", 1)[0]), root / row.image, tuple(row.captions), row.split,
                  row.meta, row.image, labels)


def _merge_rows(rows: Iterable[_Row | Skip], root: Path) -> Iterator[Entry]:
    """Rows -> records; consecutive rows naming the same image (Flickr-style, one caption a row) become one record."""
    pending: _Row | None = None
    for row in rows:
        if pending is not None and isinstance(row, _Row) and row.image == pending.image:
            pending.captions.extend(row.captions)
            continue
        if pending is not None:
            yield _record(pending, root)
        pending = row if isinstance(row, _Row) else None
        if isinstance(row, Skip):
            yield row
    if pending is not None:
        yield _record(pending, root)


def _tsv(file: Path, images: Path | None, image_column: str | None, caption_column: str | None) -> Source:
    delimiter = "," if file.suffix.lower() == ".csv" else "\t"

    def open_table():  # surrogateescape: a row with bad bytes becomes a bad_caption skip, not a crashed run
        return open(file, newline="", encoding="utf-8", errors="surrogateescape")

    with open_table() as f:
        header = next(csv.reader(f, delimiter=delimiter), [])
    image_col = _pick(header, image_column, IMAGE_COLUMNS)
    caption_col = _pick(header, caption_column, CAPTION_COLUMNS)
    for what, found, wanted, candidates in (("image", image_col, image_column, IMAGE_COLUMNS),
                                            ("caption", caption_col, caption_column, CAPTION_COLUMNS)):
        if found is None:
            raise VltkError(f"{file}: no {what} column (looked for {wanted or ', '.join(candidates)}; the header is "
                            f"{', '.join(header) or 'empty'}); name it with --{what}-column")
    split_col = _pick(header, None, ("split",))

    def rows() -> Iterator[_Row | Skip]:
        with open_table() as f:
            for n, row in enumerate(csv.DictReader(f, delimiter=delimiter), start=2):
                where = f"{file.name}:{n}"
                image, caption = row.get(image_col), row.get(caption_col)
                if not image or caption is None:
                    yield Skip(sanitize_key(where), where, "bad_row", "missing image or caption cell")
                elif _undecodable(image + caption):
                    yield Skip(sanitize_key(where), where, "bad_caption", "not valid UTF-8")
                else:
                    meta = {k: v for k, v in row.items() if k and k not in (image_col, caption_col, split_col)}
                    yield _Row(image, [caption], row.get(split_col) if split_col else None, meta)

    root = images or find_image_root(file, _first_images(rows()))
    return Source("tsv", _table_inputs(file, root), None, lambda: _merge_rows(rows(), root), root)


def _first_images(rows: Generator[_Row | Skip, None, None]) -> list[str]:
    """The first few distinct image paths of a table (to find its image folder), reading no further."""
    with contextlib.closing(rows):  # closes the table file now, not when the generator is collected
        named = (row.image for row in itertools.islice(rows, 100 * PROBES) if isinstance(row, _Row))
        return list(itertools.islice(dict.fromkeys(named), PROBES))


def _table_inputs(file: Path, root: Path) -> dict[str, Path]:
    # Images beside the table are not fingerprinted: its folder may be anything (a home directory).
    beside = os.path.abspath(root) == os.path.dirname(os.path.abspath(file))
    return {"source": file} if beside else {"source": file, "images": root}


def _undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _jsonl(file: Path, images: Path | None, image_column: str | None, caption_column: str | None) -> Source:
    def rows() -> Iterator[_Row | Skip]:
        with open(file, "rb") as f:
            for n, line in enumerate(f, start=1):
                where = f"{file.name}:{n}"
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except UnicodeDecodeError as err:
                    yield Skip(sanitize_key(where), where, "bad_caption", str(err)[:200])
                    continue
                except json.JSONDecodeError as err:
                    yield Skip(sanitize_key(where), where, "bad_row", f"invalid JSON: {err}")
                    continue
                image_key = _pick(row, image_column, IMAGE_COLUMNS) if isinstance(row, dict) else None
                if image_key is None or not isinstance(row[image_key], str):
                    yield Skip(sanitize_key(where), where, "bad_row", "no image path")
                    continue
                image = row[image_key]
                caption_key = _pick(row, caption_column, CAPTION_COLUMNS)
                value = row.get(caption_key) if caption_key else None
                captions = [value] if isinstance(value, str) else value
                if caption_key is None:
                    yield Skip(sanitize_key(image.rsplit(".", 1)[0]), image, "missing_caption")
                elif not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                    yield Skip(sanitize_key(image.rsplit(".", 1)[0]), image, "bad_caption",
                               f"'{caption_key}' is not text or a list of text")
                elif (bad := _bad_labels(row)) is not None:
                    yield Skip(sanitize_key(image.rsplit(".", 1)[0]), image, "bad_row", bad)
                else:
                    meta = {k: v for k, v in row.items() if k not in (image_key, caption_key, "split", *LABEL_KEYS)}
                    yield _Row(image, captions, row.get("split"), meta, {k: row[k] for k in LABEL_KEYS if k in row})

    root = images or find_image_root(file, _first_images(rows()))
    # A synth folder is an artifact: its manifest hash identifies it (and the images in it).
    inputs = {"source": file.parent} if file.name == SYNTH_INDEX else _table_inputs(file, root)
    with open(file, "rb") as f:
        total = sum(1 for line in f if line.strip())  # one item per non-empty line: the progress bar gets an ETA
    return Source("jsonl", inputs, total, lambda: (_record(r, root) if isinstance(r, _Row) else r for r in rows()),
                  root, _synth_categories(file.parent) if file.name == SYNTH_INDEX else None)


def _bad_labels(row: dict[str, Any]) -> str | None:
    """What is wrong with a JSONL row's label keys (None: nothing, or it has none)."""
    for name in ("panoptic", "depth"):
        if name in row and not isinstance(row[name], str):
            return f"'{name}' is not a path"
    if "panoptic" in row and not isinstance(row.get("segments_info"), list):
        return "'panoptic' without a 'segments_info' list"
    return None


def _synth_categories(folder: Path) -> list[dict[str, Any]] | None:
    """The panoptic categories a synth folder's manifest lists (None: an older folder, without labels)."""
    try:
        categories = json.loads((folder / "manifest.json").read_text())["contents"]["categories"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return categories if isinstance(categories, list) else None


def _with_depth(source: Source, folder: Path) -> Source:
    """`source` whose records also carry their depth map: FOLDER/<the image's path in the source, suffix .png or
    .npy> (an images folder and a depth folder with matching stems, as NYU Depth v2 exports are); a missing_depth
    skip when there is none."""
    if source.format == "wds":
        raise VltkError("--depth pairs depth maps with image files by name; a WebDataset source has no image files")
    if not folder.is_dir():
        raise VltkError(f"depth folder not found: {folder}")

    def read() -> Iterator[Entry]:
        for item in source.read():
            if not isinstance(item, Record):
                yield item
                continue
            stem = Path(item.source).with_suffix("").as_posix()
            found = next((f for suffix in DEPTH_SUFFIXES if (f := folder / f"{stem}{suffix}").is_file()), None)
            if found is None:
                yield Skip(item.key, item.source, "missing_depth", f"no {stem}.png or .npy in {folder}")
            else:
                yield dataclasses.replace(item, labels=dataclasses.replace(item.labels or Labels(), depth=found))

    return dataclasses.replace(source, inputs={**source.inputs, "depth": folder}, read=read)


def _is_brace_pattern(text: str) -> bool:
    return re.search(r"\{[^{}]*(\.\.|,)[^{}]*\}", text) is not None


def _tar_paths(src: Path) -> list[Path]:
    """The tars of a .tar file, a folder of tars, or a brace pattern (data-{000..009}.tar), in order."""
    if src.is_file():
        return [src]
    if src.is_dir():
        paths = sorted(p for p in src.iterdir() if p.suffix == ".tar")
        if not paths:
            raise VltkError(f"no .tar files in {src}")
        return paths
    if not _is_brace_pattern(str(src)):
        raise VltkError(f"source not found: {src}")
    import webdataset as wds  # imports torch: only when a tar source is read

    paths = [Path(url) for url in wds.shardlists.expand_urls(str(src))]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise VltkError(f"{src}: {len(missing)} of {len(paths)} tars not found (first: {missing[0]})")
    return paths


def _wds(src: Path) -> Source:
    paths = _tar_paths(src)

    def read() -> Iterator[Entry]:
        import webdataset as wds

        for path in paths:
            try:
                for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
                    yield _wds_item(path.name, sample)
            except Exception as err:  # a corrupt tar ends that tar's stream; the others still count
                yield Skip(sanitize_key(path.name), path.name, "bad_tar", f"{type(err).__name__}: {err}"[:200])

    # A brace pattern's files live in its folder; fingerprint that (the pattern itself is not a path).
    inputs = {"source": src if src.exists() else paths[0].parent}
    return Source("wds", inputs, None, read)


def _wds_item(tar: str, sample: dict[str, Any]) -> Entry:
    key = sanitize_key(sample["__key__"])
    where = f"{tar}:{sample['__key__']}"
    ext = next((e for e in ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif") if e in sample), None)
    if ext is None:
        return Skip(key, where, "missing_image", "no image member")
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
        text = sample["txt"].decode("utf-8") if "txt" in sample else None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return Skip(key, where, "bad_caption", str(err)[:200])
    meta = meta if isinstance(meta, dict) else {"json": meta}
    if text is not None:
        captions = split_lines(text)
    elif isinstance(meta.get("captions"), list):  # vltk's own shards keep their captions in the json
        captions = [c for c in meta.pop("captions") if isinstance(c, str)]
    elif isinstance(meta.get("caption"), str):
        captions = [meta["caption"]]
    else:
        return Skip(key, where, "missing_caption", "no .txt member and no caption in .json")
    split = meta.pop("split", None)
    return Record(key, sample[ext], tuple(captions), split, meta, where)
