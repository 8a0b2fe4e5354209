"""`vltk shard`: ingest image-caption data into WebDataset shards (resized, validated, split into train/val).

    vltk shard build/demo/raw build/demo/shards --size 32
    vltk shard coco/annotations/captions_train2014.json shards --part 3/8    # slice 3 of 8, on its own machine
    vltk shard coco/annotations/panoptic_val2017.json shards               # COCO panoptic: + panoptic.png, segments
    vltk shard nyu/images shards --depth nyu/depth                          # NYU-style pairs: + depth.png

Reads any source `vltk.data.sources` knows, decodes and resizes images in `workers` processes (streaming, in bounded
chunks, output order independent of `workers`), and writes the shards artifact described in `vltk.data.shards`. Dense
labels a source has (a synth folder's panoptic/ and depth/, COCO panoptic, `--depth DIR`) are validated and carried
beside their image in its pixels (`vltk.data.labels`); a record whose label is missing or broken is skipped.
Items that cannot be used are skipped, counted by reason in the manifest and listed in `skipped.jsonl`. A source that
gives no train sample (empty, or every item skipped) is an error and nothing is published: the training stages after
this one need train samples. An empty val split is fine (`--val-fraction 0`).

With `--part i/n` each machine handles the items whose index in the source order is i mod n, builds its tars in its own
`OUT.part-i-of-n.partial/`, then moves them into OUT with a record `OUT/parts/i-of-n.json`; the part that finds all n
records writes `OUT/manifest.json`, so the shard set counts as finished only once every part is done.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from vltk.artifacts import (
    MANIFEST, begin, check_output, differences, identity, is_artifact, make_manifest, up_to_date, write_json_atomic,
)
from vltk.data.images import ImageSpec, Rejection
from vltk.data.labels import Prepared, prepare_sample
from vltk.data.shards import Sample, SplitWriter
from vltk.data.sources import Entry, Record, Skip, Source, open_source
from vltk.errors import VltkError
from vltk.records import ShardsContents, Stage
from vltk.ui import console, progress

STAGE = Stage.SHARD
SKIPPED = "skipped.jsonl"
SPLITS = ("train", "val", "test")  # train and val are always listed (maybe empty); test only when the source has one
TASK = 8  # records per task handed to a worker process


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardConfig:
    format: Literal["auto", "folder", "coco", "coco-panoptic", "tsv", "jsonl", "wds"] = "auto"
    size: int = 256  # output images are size x size
    resize: Literal["center-crop", "pad"] = "center-crop"
    image_format: Literal["png", "jpeg"] = "jpeg"
    quality: int = 95  # JPEG quality
    shard_size: int = 1000  # samples per tar
    val_fraction: float = 0.05  # used only when the source has no split of its own
    images: str | None = None  # image folder of a COCO JSON / TSV / JSONL source
    depth: str | None = None  # a folder of depth maps named as the images (stem + .png / .npy): NYU-style pairs
    image_column: str | None = None
    caption_column: str | None = None
    max_pixels: int = 89_478_485  # PIL's decompression-bomb limit; larger images are skipped as too_many_pixels
    min_size: int = 8  # images with a side shorter than this are skipped as too_small
    max_captions: int = 0  # keep at most this many captions per image (0 = all)
    seed: int = 0  # the train/val assignment is a hash of (seed, key)

    def __post_init__(self) -> None:
        rules = [
            ("size", self.size >= 1, ">= 1"), ("quality", 1 <= self.quality <= 100, "in 1..100"),
            ("shard_size", self.shard_size >= 1, ">= 1"), ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("max_pixels", self.max_pixels >= 1, ">= 1"), ("min_size", self.min_size >= 1, ">= 1"),
            ("max_captions", self.max_captions >= 0, ">= 0 (0 keeps all)"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    def image_spec(self) -> ImageSpec:
        return ImageSpec(size=self.size, resize=self.resize, image_format=self.image_format, quality=self.quality,
                         max_pixels=self.max_pixels, min_size=self.min_size)


@dataclasses.dataclass
class Written:
    """What one run (or one part) wrote: {split: {samples, captions, shards}} and {reason: count}."""

    splits: dict[str, dict[str, Any]]
    skipped: collections.Counter[str]


def run(
    cfg: ShardConfig, src: Path, out: Path, *, workers: int = 2, part: tuple[int, int] | None = None,
    force: bool = False,
) -> Path:
    """Build the shards artifact at `out` and return it. With `part` = (i, n), build slice i of it; while other slices
    are still missing this returns the slice's record (`out/parts/i-of-n.json`, manifest-shaped) instead of `out`."""
    source = open_source(Path(src), cfg.format, images=Path(cfg.images) if cfg.images else None,
                         image_column=cfg.image_column, caption_column=cfg.caption_column,
                         depth=Path(cfg.depth) if cfg.depth else None)
    if source.image_root is not None:  # found among several places: say which, before minutes of decoding
        console().print(f"images from {source.image_root}")
    if part is not None:
        return _run_part(cfg, source, Path(out), *part, workers=workers, force=force)
    job = begin(out, stage=STAGE, config=cfg, inputs=source.inputs, force=force)
    if job is None:
        return Path(out)
    written = write_shards(cfg, source, job.work, part=(0, 1), workers=workers)
    require_train(written, source, job.work / SKIPPED)
    return job.publish(contents=_contents(cfg, source, written))


def require_train(written: Written, source: Source, skip_list: Path) -> None:
    """A one-line error, saying why, when the whole source gave no train sample (call it before publishing). The skips
    go into the message, as a failed run's work (`skip_list` with it) need not outlive it."""
    if written.splits["train"]["samples"]:
        return
    src, skipped = source.inputs["source"], sum(written.skipped.values())
    if any(s["samples"] for s in written.splits.values()):
        raise VltkError(f"no train samples from {src} ({_images(written)} images, {skipped} skipped): the training "
                        "stages need some (see the source's own split, or --val-fraction); nothing was published")
    if not skipped:
        raise VltkError(f"{src} holds no samples (read as a {source.format} source); nothing was published")
    with open(skip_list) as log:
        first = json.loads(log.readline())
    example = f"{first['source']}: {first['reason']}" + (f" ({first['detail']})" if first["detail"] else "")
    raise VltkError(f"no usable samples in {src}: all {skipped} skipped ({_reasons(written.skipped)}; the first: "
                    f"{example}); nothing was published")


def assign_split(key: str, val_fraction: float, seed: int) -> str:
    """'val' for a `val_fraction` of keys, by a hash of (seed, key): stable whatever the order, parts or workers."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") < val_fraction * 2**64 else "train"


def write_shards(cfg: ShardConfig, source: Source, directory: Path, *, part: tuple[int, int], workers: int) -> Written:
    """Write slice `part` = (i, n) of `source` (items whose index is i mod n) as tars + skipped.jsonl in `directory`."""
    index, count = part
    spec = cfg.image_spec()
    writers = {split: SplitWriter(directory, split, index, cfg.shard_size) for split in SPLITS}
    skipped: collections.Counter[str] = collections.Counter()
    total = None if source.total is None else len(range(index, source.total, count))
    items = itertools.islice(source.items(), index, None, count)
    label = f"shard {source.format}" + (f" part {index}/{count}" if count > 1 else "")
    # The pool first: its start method depends on the threads alive, and the progress bar starts one.
    with _pool(workers) as pool, open(directory / SKIPPED, "w") as log, progress(label, total, unit="img") as advance:
        for item, result in _prepared(items, spec, pool, chunk=TASK * max(1, workers)):
            if isinstance(item, Skip) or isinstance(result, Rejection):
                why = item if isinstance(item, Skip) else result
                skipped[why.reason] += 1
                entry = {"key": item.key, "source": item.source, "reason": why.reason, "detail": why.detail}
                log.write(json.dumps(entry) + "\n")
            else:
                split = item.split or assign_split(item.key, cfg.val_fraction, cfg.seed)
                captions = item.captions[: cfg.max_captions] if cfg.max_captions else item.captions
                image, labels = result
                writers[split].write(Sample(key=item.key, image=image, ext=spec.ext, captions=captions,
                                            source=item.source, meta=item.meta, labels=labels))
            advance(1, info=f"{sum(skipped.values())} skipped" if skipped else None)
    splits = {}
    for split, writer in writers.items():
        shards = writer.close()
        if split != "test" or shards:
            splits[split] = {"samples": writer.samples, "captions": writer.captions, "shards": shards}
    return Written(splits, skipped)


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[multiprocessing.pool.Pool | None]:
    """`workers` decoding processes (None: decode inline).

    fork is instant and shares the modules already imported, but is only safe while this process runs one thread (the
    CLI, before the progress bar starts). Otherwise (pytest-xdist, a notebook) workers come from a forkserver: a clean
    process started once, whose forks are safe whatever threads the parent has. spawn where neither exists.
    """
    if workers <= 1:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    method = next(m for m in ("fork" if threading.active_count() == 1 else "", "forkserver", "spawn") if m in methods)
    # Workers ignore Ctrl-C: the parent gets it, stops, and terminates them (no traceback from every worker).
    ignore_interrupt = functools.partial(signal.signal, signal.SIGINT, signal.SIG_IGN)
    with multiprocessing.get_context(method).Pool(workers, initializer=ignore_interrupt) as pool:
        yield pool


def _prepared(items: Iterable[Entry], spec: ImageSpec, pool: multiprocessing.pool.Pool | None, chunk: int,
              ) -> Iterator[tuple[Entry, Prepared | Rejection | None]]:
    """(item, encoded image and labels or rejection; None for a Skip) in input order, decoding in `pool` if any.

    Chunks of items are handed out a few at a time (not `Pool.imap`, whose feeder thread would read the whole source
    ahead), so memory stays flat however many images there are.
    """
    prepare = functools.partial(prepare_sample, spec=spec)
    chunks = _batched(items, chunk)
    if pool is None:
        for batch in chunks:
            yield from _pair(batch, [prepare((it.image, it.labels)) for it in batch if isinstance(it, Record)])
        return
    pending: collections.deque[tuple[list[Entry], multiprocessing.pool.AsyncResult]] = collections.deque()
    for batch in chunks:
        inputs = [(it.image, it.labels) for it in batch if isinstance(it, Record)]
        pending.append((batch, pool.map_async(prepare, inputs, chunksize=TASK)))
        if len(pending) > 2:  # one chunk being written, two being decoded
            done, result = pending.popleft()
            yield from _pair(done, result.get())
    for done, result in pending:
        yield from _pair(done, result.get())


def _pair(chunk: list[Entry], results: list[Prepared | Rejection],
          ) -> Iterator[tuple[Entry, Prepared | Rejection | None]]:
    prepared = iter(results)
    for item in chunk:
        yield item, next(prepared) if isinstance(item, Record) else None


def _batched(items: Iterable[Entry], n: int) -> Iterator[list[Entry]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, n)):
        yield chunk


def _images(written: Written) -> str:
    """'90 train / 10 val'."""
    return " / ".join(f"{s['samples']} {split}" for split, s in written.splits.items())


def _reasons(skipped: collections.Counter[str]) -> str:
    """'2 not_an_image, 1 empty_caption': the most frequent first, ties by name (so parts agree with one run)."""
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))


def _contents(cfg: ShardConfig, source: Source, written: Written, prefix: str = "") -> dict[str, Any]:
    skipped = sum(written.skipped.values())
    summary = f"{prefix}{_images(written)} images, {skipped} skipped" + (
        f" ({_reasons(written.skipped)})" if skipped else "")
    # The image folder is a record of where the pictures came from, not an input identity (a moved copy is the same).
    root = {"image_root": os.path.abspath(source.image_root)} if source.image_root is not None else {}
    categories = {"categories": source.categories} if source.categories is not None else {}
    return ShardsContents(splits=written.splits, image_size=cfg.size, skipped=dict(sorted(written.skipped.items())),
                          extra={"image_format": cfg.image_format, "source_format": source.format, **root,
                                 **categories, "summary": summary}).to_dict()


def _run_part(
    cfg: ShardConfig, source: Source, out: Path, index: int, count: int, *, workers: int, force: bool,
) -> Path:
    check_output(out, source.inputs)
    ident = identity(STAGE, cfg, source.inputs, out)
    if up_to_date(out, ident, force):
        return out
    if is_artifact(out):
        (out / MANIFEST).unlink()  # --force: from here on the set is unfinished until every part is done again
    elif out.is_dir() and not (out / "parts").is_dir() and any(out.iterdir()):
        raise VltkError(f"{out} exists and is not a vltk artifact; vltk only writes into its own artifacts, so "
                        "choose another path or move it away")
    parts = out / "parts"
    name = f"{index}-of-{count}"
    record = parts / f"{name}.json"
    old = json.loads(record.read_text()) if record.is_file() else None
    if force or old is None or differences(old, ident):
        if old is not None:  # a previous run of this part: unlist it first, then drop its tars
            record.unlink()
            for split in ShardsContents.from_manifest(old, record).splits.values():
                for tar in split["shards"]:
                    (out / tar).unlink(missing_ok=True)
        _build_part(cfg, source, out, index, count, ident, workers)
    if combined := _combine(cfg, source, out, ident, count):
        return combined
    console().print(f"part {index}/{count} is done; {out} is finished once all {count} parts are")
    return record  # its own manifest-like record, so the CLI can show what this part made


def _build_part(cfg: ShardConfig, source: Source, out: Path, index: int, count: int, ident: dict[str, Any],
                workers: int) -> None:
    name = f"{index}-of-{count}"
    work = out.with_name(f"{out.name}.part-{name}.partial")
    shutil.rmtree(work, ignore_errors=True)  # what a killed run of this part left behind
    work.mkdir(parents=True)
    started = time.time()
    written = write_shards(cfg, source, work, part=(index, count), workers=workers)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    for split in written.splits.values():
        for tar in split["shards"]:
            os.replace(work / tar, out / tar)
    os.replace(work / SKIPPED, out / "parts" / f"{name}.{SKIPPED}")
    # The record is written last: a part is done exactly when its record exists.
    contents = _contents(cfg, source, written, prefix=f"part {index}/{count}: ")
    write_json_atomic(out / "parts" / f"{name}.json", make_manifest(ident, contents, started, part=[index, count]))
    work.rmdir()


def _combine(cfg: ShardConfig, source: Source, out: Path, ident: dict[str, Any], count: int) -> Path | None:
    """Write OUT/manifest.json (and skipped.jsonl) from all `count` part records; None while any is missing."""
    parts = out / "parts"
    records = []
    for j in range(count):
        file = parts / f"{j}-of-{count}.json"
        if not file.is_file():
            return None
        records.append(json.loads(file.read_text()))
        if diffs := differences(records[-1], ident):
            console().print(f"[yellow]{file} was made by a different run (differs in: {', '.join(diffs)}); "
                            f"re-run part {j}/{count}[/]")
            return None
    splits: dict[str, dict[str, Any]] = {}
    skipped: collections.Counter[str] = collections.Counter()
    for rec in records:
        part = ShardsContents.from_manifest(rec, parts)
        skipped.update(part.skipped)
        for split, done in part.splits.items():
            into = splits.setdefault(split, {"samples": 0, "captions": 0, "shards": []})
            into["samples"] += done["samples"]
            into["captions"] += done["captions"]
            into["shards"] += done["shards"]
    splits = {split: splits[split] for split in SPLITS if split in splits}
    tmp = out / f".{SKIPPED}.{os.getpid()}.tmp"
    with open(tmp, "wb") as merged:
        for j in range(count):
            with open(parts / f"{j}-of-{count}.{SKIPPED}", "rb") as f:
                shutil.copyfileobj(f, merged)
    os.replace(tmp, out / SKIPPED)
    written = Written(splits, skipped)
    require_train(written, source, out / SKIPPED)
    manifest = make_manifest(ident, _contents(cfg, source, written), time.time(), parts=count)
    manifest["seconds"] = round(sum(rec["seconds"] for rec in records), 3)  # machine time over all parts
    write_json_atomic(out / MANIFEST, manifest)
    return out

