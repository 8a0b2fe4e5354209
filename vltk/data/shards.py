"""The shards artifact's on-disk format: WebDataset tars of (image, captions, meta), one set per split.

Layout of a shards artifact:

    shards/
      manifest.json     contents.splits.<split> = {samples, captions, shards: [file names]}; image_size, image_format
      train-000-000000.tar ...   {split}-{part:03d}-{index:06d}.tar (part = the --part slice that wrote it)
      val-000-000000.tar ...
      skipped.jsonl     one line per source item that was skipped, with the reason

Each sample in a tar is `{key}.png` (or `.jpg`) plus `{key}.json` = {"captions": [...], "source": ..., "meta": {...}}.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Iterator

import webdataset as wds
from PIL import Image

from vltk.artifacts import open_artifact
from vltk.errors import VltkError

IMAGE_EXTS = ("png", "jpg")


@dataclasses.dataclass(frozen=True)
class Sample:
    key: str
    image: bytes  # encoded PNG/JPEG bytes; decode with PIL when needed
    ext: str
    captions: tuple[str, ...]
    source: str
    meta: dict[str, Any]


class SplitWriter:
    """Writes one split's samples into tars of `maxcount` samples; no file is created for an empty split."""

    def __init__(self, directory: Path, split: str, part: int, maxcount: int):
        self.pattern = str(Path(directory) / f"{split}-{part:03d}-%06d.tar")
        self.maxcount = maxcount
        self.writer: wds.ShardWriter | None = None
        self.samples = 0
        self.captions = 0

    def write(self, sample: Sample) -> None:
        if self.writer is None:
            # mtime fixed so that the same input gives byte-identical tars.
            self.writer = wds.ShardWriter(self.pattern, maxcount=self.maxcount, verbose=0, mtime=0.0)
        record = {"captions": list(sample.captions), "source": sample.source, "meta": sample.meta}
        self.writer.write({"__key__": sample.key, sample.ext: sample.image, "json": json.dumps(record).encode()})
        self.samples += 1
        self.captions += len(sample.captions)

    def close(self) -> list[str]:
        """Close the last tar; return the names of the tars written, in order."""
        if self.writer is None:
            return []
        count = self.writer.shard  # read first: webdataset's close() deletes the attribute
        self.writer.close()
        return [Path(self.pattern % i).name for i in range(count)]


def shard_paths(shards: Path, split: str) -> list[Path]:
    """The tar files of `split` in a finished shards artifact (an error if the split does not exist)."""
    manifest = open_artifact(shards, "shard")
    splits = manifest["contents"]["splits"]
    if split not in splits:
        raise VltkError(f"{shards} has no '{split}' split (it has: {', '.join(splits) or 'none'})")
    return [Path(shards) / name for name in splits[split]["shards"]]


def read_tars(paths: list[Path], images: bool = True) -> Iterator[Sample]:
    """Samples from tar files in order; `images=False` skips image bytes (reading captions only)."""
    if not paths:
        return
    select = None if images else (lambda name: name.endswith(".json"))
    # No node/worker splitting here: callers pick the tars each process reads (webdataset's defaults would refuse to
    # run under a distributed launch, or silently drop tars inside DataLoader workers).
    dataset = wds.WebDataset([str(p) for p in paths], shardshuffle=False, select_files=select, empty_check=False,
                             nodesplitter=None, workersplitter=None)
    for raw in dataset:
        record = json.loads(raw["json"])
        ext = next((e for e in IMAGE_EXTS if e in raw), "")
        yield Sample(
            key=raw["__key__"], image=raw.get(ext, b""), ext=ext, captions=tuple(record["captions"]),
            source=record.get("source", ""), meta=record.get("meta", {}),
        )


def iter_samples(shards: Path, split: str, images: bool = True) -> Iterator[Sample]:
    """Every sample of `split`, in shard order."""
    return read_tars(shard_paths(shards, split), images=images)


def decode_image(sample: Sample) -> Image.Image:
    with Image.open(io.BytesIO(sample.image)) as img:
        return img.convert("RGB")
