"""The shards artifact's on-disk format: WebDataset tars of (image, captions, meta), one set per split.

Layout of a shards artifact:

    shards/
      manifest.json     contents.splits.<split> = {samples, captions, shards: [file names]}; image_size, image_format
      train-000-000000.tar ...   {split}-{part:03d}-{index:06d}.tar (part = the --part slice that wrote it)
      val-000-000000.tar ...
      skipped.jsonl     one line per source item that was skipped, with the reason

Each sample in a tar is `{key}.png` (or `.jpg`) plus `{key}.json` = {"captions": [...], "source": ..., "meta": {...}},
and, when its source has dense labels, in the image's pixels (resized with NEAREST, cropped or padded as the image):

    {key}.panoptic.png    COCO panoptic ids (vltk.data.panoptic; 0 = void, also the padding)
    {key}.segments.json   its segments_info, areas and boxes counted in this map
    {key}.depth.png       16-bit depth in millimetres (vltk.data.depth; 0 = no measurement, also the padding)

The manifest's contents.categories lists the panoptic categories (COCO's {id, name, isthing, ...}) when known.
"""

from __future__ import annotations

import dataclasses
import io
import json
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import webdataset as wds
from PIL import Image

from vltk.artifacts import open_artifact
from vltk.data.schema import Shape
from vltk.data import depth, panoptic
from vltk.data.tars import DAMAGED, decoding, member, tar_samples
from vltk.errors import VltkError
from vltk.records import Stage

IMAGE_EXTS = ("png", "jpg")
PANOPTIC, SEGMENTS, DEPTH = "panoptic.png", "segments.json", "depth.png"
LABEL_MEMBERS = (PANOPTIC, SEGMENTS, DEPTH)
# A sample's JSON member (the encoded artifact's records carry the same fields).
ABOUT = Shape({"captions": list[str]}, optional={"source": str, "meta": dict})


@dataclasses.dataclass(frozen=True)
class Sample:
    key: str
    image: bytes  # encoded PNG/JPEG bytes; decode with PIL when needed
    ext: str
    captions: tuple[str, ...]
    source: str
    meta: dict[str, Any]
    tar: str = ""  # the tar it was read from, for errors about its image ("" when it comes from a source)
    labels: dict[str, bytes] = dataclasses.field(default_factory=dict)  # LABEL_MEMBERS it has -> their bytes


class TarSetWriter:
    """Writes WebDataset samples into tars of at most `maxcount` named `pattern % k`; no file when nothing is written.

    Shared by the shards and the encoded artifacts; subclasses turn their records into samples and count captions.
    """

    def __init__(self, pattern: str, maxcount: int):
        self.pattern = pattern
        self.maxcount = maxcount
        self.writer: wds.ShardWriter | None = None
        self.samples = 0
        self.captions = 0

    def write_sample(self, sample: dict[str, Any]) -> None:
        if self.writer is None:
            # mtime fixed so that the same input gives byte-identical tars (and a resumed run equals one run).
            self.writer = wds.ShardWriter(self.pattern, maxcount=self.maxcount, verbose=0, mtime=0.0)
        self.writer.write(sample)
        self.samples += 1

    def close(self) -> list[str]:
        """Close the last tar; return the names of the tars written, in order."""
        if self.writer is None:
            return []
        count = self.writer.shard  # read first: webdataset's close() deletes the attribute
        self.writer.close()
        return [Path(self.pattern % i).name for i in range(count)]


class SplitWriter(TarSetWriter):
    """Writes one split's samples of a shards artifact."""

    def __init__(self, directory: Path, split: str, part: int, maxcount: int):
        super().__init__(str(Path(directory) / f"{split}-{part:03d}-%06d.tar"), maxcount)

    def write(self, sample: Sample) -> None:
        record = {"captions": list(sample.captions), "source": sample.source, "meta": sample.meta}
        self.write_sample({"__key__": sample.key, sample.ext: sample.image, "json": json.dumps(record).encode(),
                           **sample.labels})
        self.captions += len(sample.captions)


def split_paths(artifact: Path, stage: str, split: str) -> list[Path]:
    """The tar files of `split` in a finished artifact of `stage` (an error if the split does not exist)."""
    splits = open_artifact(artifact, stage)["contents"]["splits"]
    if split not in splits:
        raise VltkError(f"{artifact} has no '{split}' split (it has: {', '.join(splits) or 'none'})")
    return [Path(artifact) / name for name in splits[split]["shards"]]


def shard_paths(shards: Path, split: str) -> list[Path]:
    """The tar files of `split` in a finished shards artifact."""
    return split_paths(shards, Stage.SHARD, split)


def raw_samples(paths: list[Path], select: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """WebDataset samples (dicts of raw bytes) from tar files, in order; a damaged tar is a VltkError naming it."""
    return chain.from_iterable(tar_samples(path, select) for path in paths)


def read_tars(paths: list[Path], images: bool = True) -> Iterator[Sample]:
    """Samples from tar files in order; `images=False` skips image bytes (reading captions only)."""
    for raw in raw_samples(paths, None if images else (lambda name: name.endswith(".json"))):
        record = member(raw, "json", ABOUT.parse)
        ext = next((e for e in IMAGE_EXTS if e in raw), "")
        if images and not ext:
            raise VltkError(f"{raw['__url__']}: sample {raw['__key__']} has no image member "
                            f"({' or '.join(IMAGE_EXTS)}); {DAMAGED}")
        yield Sample(
            key=raw["__key__"], image=raw.get(ext, b""), ext=ext, captions=tuple(record["captions"]),
            source=record.get("source", ""), meta=record.get("meta", {}), tar=raw["__url__"],
            labels={name: raw[name] for name in LABEL_MEMBERS if name in raw},
        )


def iter_samples(shards: Path, split: str, images: bool = True) -> Iterator[Sample]:
    """Every sample of `split`, in shard order."""
    return read_tars(shard_paths(shards, split), images=images)


def decode_image(sample: Sample) -> Image.Image:
    """The sample's image as RGB; one that does not decode is a VltkError naming its tar and member."""
    with decoding(sample.tar, f"{sample.key}.{sample.ext}"), Image.open(io.BytesIO(sample.image)) as img:
        return img.convert("RGB")


def decode_panoptic(sample: Sample) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The sample's panoptic label: (segment ids (H, W) int64, its segments_info); a VltkError if it has none."""
    raw = {"__url__": sample.tar, "__key__": sample.key, **sample.labels}
    return member(raw, PANOPTIC, panoptic.decode_png), member(raw, SEGMENTS, json.loads)


def decode_depth(sample: Sample) -> np.ndarray:
    """The sample's depth: (H, W) uint16 millimetres, 0 where unmeasured; a VltkError if it has none."""
    return member({"__url__": sample.tar, "__key__": sample.key, **sample.labels}, DEPTH, depth.decode_png)
