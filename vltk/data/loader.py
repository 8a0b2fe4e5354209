"""Training batches of images in [-1, 1] from one split of a shards artifact: deterministic, split by rank, resumable.

    data = ImageBatches(shards, "train", batch_size=64, seed=0, rank=0, world_size=1)
    for batch in data(position=0):        # (64 / world_size, 3, H, W) float32, this process's share of each batch
        ...

The data is one endless stream: epoch after epoch of the split, each epoch in its own order, a function of (seed,
epoch) alone. Global batch k holds stream positions [p + kB, p + (k+1)B) after a start position p (samples already
consumed), and rank r of W takes the r-th of W equal slices of it, so the union of the ranks' batches is the same
whatever W, and `data(position)` continues a killed run exactly.

A split of at most `in_memory_max` images is decoded once into one uint8 tensor and permuted per epoch. A larger one is
streamed: the epoch's tars in a shuffled order through a seeded shuffle buffer; every rank reads the whole stream (the
tars' bytes) but decodes only its own slice, which keeps the stream independent of the number of processes.
Augmentation is off by default: the shapes captions say left and right, so a flip would contradict them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from vltk.artifacts import open_artifact
from vltk.data.shards import Sample, read_tars, shard_paths
from vltk.errors import VltkError


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, H, W) float32 tensor in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # (H, W, 3)
    return pixels.permute(2, 0, 1).float() / 127.5 - 1.0


def _decode(sample: Sample) -> np.ndarray:
    with Image.open(io.BytesIO(sample.image)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)


class ImageBatches:
    """This process's share of each global batch of `split`, from any stream position (see the module docstring)."""

    def __init__(
        self, shards: Path, split: str, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        flip: bool = False, in_memory_max: int = 100_000, shuffle_buffer: int = 2_000,
    ):
        if batch_size % world_size:
            raise VltkError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        manifest = open_artifact(shards, "shard")
        self.paths = shard_paths(shards, split)
        self.num_samples = int(manifest["contents"]["splits"][split]["samples"])
        if self.num_samples == 0:
            raise VltkError(f"{shards} has no images in its '{split}' split")
        self.image_size = int(manifest["contents"]["image_size"])
        self.batch_size, self.seed, self.flip = batch_size, seed, flip
        self.local = batch_size // world_size
        self.slice = range(rank * self.local, (rank + 1) * self.local)  # offsets within a global batch
        self.shuffle_buffer = shuffle_buffer
        self.images: torch.Tensor | None = None
        if self.num_samples <= in_memory_max:
            self.images = torch.from_numpy(np.stack([_decode(s) for s in read_tars(self.paths)]))  # (N, 3, H, W)

    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, stream])

    def _flips(self, epoch: int) -> np.ndarray:
        """(N,) bool: whether the epoch's sample at each offset is mirrored (all False unless `flip`)."""
        if not self.flip:
            return np.zeros(self.num_samples, dtype=bool)
        return self._rng(epoch, 1).random(self.num_samples) < 0.5

    def _to_batch(self, items: list, flips: list[bool]) -> torch.Tensor:
        """Indices into the in-memory images, or decoded (3, H, W) arrays -> (b, 3, H, W) float32 in [-1, 1]."""
        if self.images is not None:
            pixels = self.images[torch.as_tensor(items)]
        else:
            pixels = torch.from_numpy(np.stack(items))
        batch = pixels.float() / 127.5 - 1.0
        mirror = torch.tensor(flips, dtype=torch.bool)
        batch[mirror] = batch[mirror].flip(-1)
        return batch

    def _stream(self, position: int) -> Iterator[tuple[int, int | Sample, bool]]:
        """(stream position, in-memory index or streamed sample, flip) from `position` on, forever."""
        n = self.num_samples
        epoch, offset = divmod(position, n)
        while True:
            flips = self._flips(epoch)
            if self.images is not None:
                order = self._rng(epoch, 0).permutation(n)
                for i in range(offset, n):
                    yield epoch * n + i, order[i], bool(flips[i])
            else:
                for i, sample in enumerate(self._streamed_epoch(epoch)):
                    if i >= offset:
                        yield epoch * n + i, sample, bool(flips[i])
            epoch, offset = epoch + 1, 0

    def _streamed_epoch(self, epoch: int) -> Iterator[Sample]:
        rng = self._rng(epoch, 0)
        paths = [self.paths[i] for i in rng.permutation(len(self.paths))]
        buffer: list[Sample] = []
        for sample in read_tars(paths):
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def __call__(self, position: int = 0) -> Iterator[torch.Tensor]:
        """(batch_size / world_size, 3, H, W) float32 batches, starting `position` samples into the stream."""
        items: list = []
        flips: list[bool] = []
        for q, item, flip in self._stream(position):
            if (q - position) % self.batch_size not in self.slice:
                continue
            items.append(int(item) if self.images is not None else _decode(item))
            flips.append(flip)
            if len(items) == self.local:
                yield self._to_batch(items, flips)
                items, flips = [], []
