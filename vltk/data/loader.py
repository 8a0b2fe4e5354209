"""Deterministic, rank-split, resumable training streams over one split of an artifact, and image batches from shards.

    data = ImageBatches(shards, "train", batch_size=64, seed=0, rank=0, world_size=1)
    for batch in data(position=0):        # (64 / world_size, 3, H, W) float32, this process's share of each batch
        ...

    stream = SplitStream(paths, n, name="train", read=read_tars, load=decode, seed=0, batch_size=64)
    for items in stream(position=0):      # [(stream position, loaded item)] * (64 / world_size)
        ...

`SplitStream` holds what every training data source shares (`ImageBatches` here, `TokenBatches` for the generators).
The data is one endless stream: epoch after epoch of the split, each epoch in its own order, a function of (seed,
split name, epoch) alone. Global batch k holds stream positions [p + kB, p + (k+1)B) after a start position p
(samples already consumed), and rank r of W takes the r-th of W equal slices of it, so the union of the ranks' batches
is the same whatever W, and `stream(position)` continues a killed run exactly. Per-sample random choices come from
`sample_rng(position, purpose)`, so they too are independent of the process split.

A split of at most `in_memory_max` samples is loaded once and permuted per epoch. A larger one is streamed: the
epoch's tars in a shuffled order through a seeded shuffle buffer; every rank reads the whole stream (the tars' bytes)
but loads (decodes) only its own slice, which keeps the stream independent of the number of processes.
Image augmentation is off by default: the shapes captions say left and right, so a flip would contradict them.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np
import torch
from PIL import Image

from vltk.data.shards import Sample, decode_image, read_tars, shard_paths
from vltk.errors import VltkError
from vltk.records import ShardsContents

Raw = TypeVar("Raw")  # what reading the tars gives, cheap to make (bytes, parsed JSON)
Example = TypeVar("Example")  # what a batch is built from (decoded arrays)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, H, W) float32 tensor in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # (H, W, 3)
    return pixels.permute(2, 0, 1).float() / 127.5 - 1.0


def split_size(splits: dict[str, dict[str, Any]], artifact: Path, split: str) -> int:
    """The number of samples of `split` by an artifact's record of its splits; an empty split is an error."""
    samples = int(splits[split]["samples"])
    if samples == 0:
        raise VltkError(f"{artifact} has no samples in its '{split}' split")
    return samples


PURPOSES = {"order": 0}  # small fixed ids of epoch-wide draws (the first key layout); others are hashed


def _key(text: str) -> int:
    return zlib.crc32(text.encode())


class SplitStream(Generic[Raw, Example]):
    """This process's share of each global batch of one split, as (stream position, item) pairs (module docstring).

    `read(paths)` yields the raw samples of tars in order; `load(raw)` turns one into the item a batch needs, and is
    called once per sample for an in-memory split, and only on this process's slice for a streamed one.
    """

    def __init__(
        self, paths: list[Path], num_samples: int, *, name: str, read: Callable[[list[Path]], Iterator[Raw]],
        load: Callable[[Raw], Example], seed: int, batch_size: int, rank: int = 0, world_size: int = 1,
        in_memory_max: int = 100_000, shuffle_buffer: int = 2_000, keyed_by_name: bool = True,
    ):
        if batch_size % world_size:
            raise VltkError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if num_samples < 1:
            raise ValueError(f"the '{name}' stream needs at least one sample")
        self.paths, self.num_samples, self.name, self.read, self.load = paths, num_samples, name, read, load
        # The name keeps the draws of two streams of one seed apart (a split and its MixSel pairs have the same size:
        # unsalted, pair j would always meet record j). Image streams are read alone and keep vltk's first key layout,
        # [seed, epoch, purpose], so that tokenizer runs reproduce across versions.
        self.seed, self.salt = seed, [_key(name)] if keyed_by_name else []
        self.batch_size, self.local = batch_size, batch_size // world_size
        self.slice = range(rank * self.local, (rank + 1) * self.local)  # offsets within a global batch
        self.shuffle_buffer = shuffle_buffer
        self.items: list[Example] | None = None
        if num_samples <= in_memory_max:
            self.items = [load(raw) for raw in read(paths)]
            self._check_count(len(self.items))

    def epoch_rng(self, epoch: int, purpose: str) -> np.random.Generator:
        """A generator for one epoch-wide draw (the order), a function of (seed, stream name, epoch, purpose)."""
        return np.random.default_rng([self.seed, *self.salt, epoch, PURPOSES.get(purpose, _key(purpose))])

    def sample_rng(self, position: int, purpose: str) -> np.random.Generator:
        """A generator for the draws of the sample at a stream position: (seed, name, epoch, purpose, position)."""
        return np.random.default_rng([self.seed, *self.salt, position // self.num_samples, _key(purpose), position])

    def _check_count(self, count: int) -> None:
        # Positions are counted with the manifest's size: a different count would silently shift every later epoch.
        if count != self.num_samples:
            raise VltkError(f"the tars of the '{self.name}' split hold {count} samples but its manifest says "
                            f"{self.num_samples}: the artifact is damaged; rebuild it")

    def _epoch(self, epoch: int) -> Iterator[Example | Raw]:
        """The epoch's items (in memory) or raw samples (streamed), in the epoch's order."""
        rng = self.epoch_rng(epoch, "order")
        if self.items is not None:
            yield from (self.items[i] for i in rng.permutation(self.num_samples))
            return
        paths = [self.paths[i] for i in rng.permutation(len(self.paths))]
        buffer: list[Raw] = []
        count = 0
        for raw in self.read(paths):
            count += 1
            buffer.append(raw)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))
        self._check_count(count)

    def __call__(self, position: int = 0, worker: int = 0, workers: int = 1) -> Iterator[list[tuple[int, Example]]]:
        """Lists of batch_size / world_size (stream position, item), starting `position` samples into the stream: the
        global batches k = worker, worker + workers, ... of them (`Workers`; all of them by default). The others are
        read past (their positions count) but not loaded."""
        n = self.num_samples
        epoch, offset = divmod(position, n)
        batch: list[tuple[int, Example]] = []
        while True:
            for i, sample in enumerate(self._epoch(epoch)):
                q = epoch * n + i
                if i < offset or (q - position) % self.batch_size not in self.slice:
                    continue
                if (q - position) // self.batch_size % workers != worker:
                    continue
                batch.append((q, sample if self.items is not None else self.load(sample)))
                if len(batch) == self.local:
                    yield batch
                    batch = []
            epoch, offset = epoch + 1, 0


def _decode(sample: Sample) -> np.ndarray:
    return np.asarray(decode_image(sample), dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)


class ImageBatches:
    """This process's share of each global batch of `split`, from any stream position (see the module docstring)."""

    def __init__(
        self, shards: Path, split: str, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        flip: bool = False, in_memory_max: int = 100_000, shuffle_buffer: int = 2_000,
    ):
        contents = ShardsContents.read(shards)
        paths = shard_paths(shards, split)
        self.num_samples = split_size(contents.splits, shards, split)
        self.image_size = contents.image_size
        self.flip = flip
        self.stream: SplitStream[Sample, np.ndarray] = SplitStream(
            paths, self.num_samples, name=split, read=read_tars, load=_decode, seed=seed, batch_size=batch_size,
            rank=rank, world_size=world_size, in_memory_max=in_memory_max, shuffle_buffer=shuffle_buffer,
            keyed_by_name=False)

    def __call__(self, position: int = 0, worker: int = 0, workers: int = 1) -> Iterator[torch.Tensor]:
        """(batch_size / world_size, 3, H, W) float32 batches, starting `position` samples into the stream (every
        `workers`-th from the `worker`-th: `Workers`)."""
        for items in self.stream(position, worker, workers):
            batch = torch.from_numpy(np.stack([pixels for _, pixels in items])).float() / 127.5 - 1.0
            if self.flip:
                mirror = torch.tensor([self.stream.sample_rng(q, "flip").random() < 0.5 for q, _ in items])
                batch[mirror] = batch[mirror].flip(-1)
            yield batch


class Workers(torch.utils.data.IterableDataset):
    """The batches of a source (`ImageBatches`, `TokenBatches`: called as source(position, worker, workers)) from a
    stream position, built in `torch.utils.data.DataLoader` worker processes: worker w of W builds global batches
    w, w + W, ... and the DataLoader takes one from each worker in turn, so the batches come out in the source's own
    order, each the same as without workers (the draws are keyed by stream position, not by who makes them)."""

    def __init__(self, source: Callable[..., Iterator[Any]], position: int):
        self.source, self.position = source, position

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.source(self.position, worker, workers)


def batches(source: Callable[..., Iterator[Any]], position: int, workers: int = 0) -> Iterable[Any]:
    """A source's batches from `position`: built in this process (workers = 0), or ahead of the training step in
    `workers` DataLoader processes (each keeps 4 batches ready; pinned for a GPU)."""
    if workers == 0:
        return source(position)
    return torch.utils.data.DataLoader(Workers(source, position), batch_size=None, num_workers=workers,
                                       prefetch_factor=4, pin_memory=torch.cuda.is_available())
