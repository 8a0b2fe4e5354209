"""The image batch loader: every epoch a permutation, deterministic by seed, split by rank, resumable by position."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vltk.data.loader import ImageBatches
from vltk.data.shards import decode_image, iter_samples
from vltk.pipeline import shard, synth

BATCH = 6


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    synth.run(synth.SynthConfig(count=40, size=16, seed=1, val_fraction=0.2), root / "raw")
    # Seven samples per tar, so streaming crosses tar boundaries.
    shard.run(shard.ShardConfig(size=16, image_format="png", shard_size=7), root / "raw", root / "shards", workers=1)
    return root / "shards"


@pytest.fixture(scope="module")
def originals(shards) -> torch.Tensor:
    """The train images read independently of the loader: (N, 3, H, W) uint8, in shard order."""
    images = [np.asarray(decode_image(s)).transpose(2, 0, 1) for s in iter_samples(shards, "train")]
    return torch.from_numpy(np.stack(images))


def take(data: ImageBatches, n: int, position: int = 0) -> list[torch.Tensor]:
    return list(itertools.islice(data(position), n))


def as_uint8(batch: torch.Tensor) -> torch.Tensor:
    return ((batch + 1) * 127.5).round().to(torch.uint8)


@pytest.mark.parametrize("in_memory_max", [10_000, 0], ids=["memory", "streaming"])
def test_each_epoch_is_a_permutation_of_the_split(shards, originals, in_memory_max):
    n = len(originals)
    data = ImageBatches(shards, "train", batch_size=BATCH, seed=0, in_memory_max=in_memory_max)
    assert data.num_samples == n
    stream = torch.cat(take(data, 2 * n // BATCH + 1))  # two epochs and a bit
    assert stream.shape[1:] == (3, 16, 16) and stream.dtype == torch.float32
    assert stream.min() >= -1 and stream.max() <= 1
    pixels = as_uint8(stream)
    assert torch.equal((pixels.float() / 127.5 - 1), stream)  # exactly x / 127.5 - 1, no augmentation
    key = lambda images: sorted(bytes(img.numpy().tobytes()) for img in images)  # noqa: E731
    first, second = pixels[:n], pixels[n:2 * n]
    assert key(first) == key(originals) and key(second) == key(originals)
    assert not torch.equal(first, second)  # a new order each epoch


@pytest.mark.parametrize("in_memory_max", [10_000, 0], ids=["memory", "streaming"])
def test_determinism_rank_split_and_resume(shards, in_memory_max):
    make = lambda seed=0, rank=0, world=1: ImageBatches(  # noqa: E731
        shards, "train", batch_size=BATCH, seed=seed, rank=rank, world_size=world, in_memory_max=in_memory_max)
    one = take(make(), 12)
    assert all(torch.equal(a, b) for a, b in zip(one, take(make(), 12)))
    assert not all(torch.equal(a, b) for a, b in zip(one, take(make(seed=1), 12)))

    # Two processes: each takes half of every global batch, and together they make the one-process batches.
    halves = [take(make(rank=r, world=2), 12) for r in range(2)]
    assert all(h.shape[0] == BATCH // 2 for h in halves[0])
    assert all(torch.equal(torch.cat([a, b]), whole) for a, b, whole in zip(*halves, one))

    # Resuming at a position (here across an epoch boundary) continues the stream exactly.
    for skip in (3, 7):
        resumed = take(make(), 12 - skip, position=skip * BATCH)
        assert all(torch.equal(a, b) for a, b in zip(resumed, one[skip:]))
    resumed_rank = take(make(rank=1, world=2), 5, position=7 * BATCH)
    assert all(torch.equal(a, b) for a, b in zip(resumed_rank, halves[1][7:]))


def test_flip_mirrors_some_images_only_when_asked(shards):
    plain = torch.cat(take(ImageBatches(shards, "train", batch_size=BATCH, seed=0), 4))
    flipped = torch.cat(take(ImageBatches(shards, "train", batch_size=BATCH, seed=0, flip=True), 4))
    mirrored = [torch.equal(f, p.flip(-1)) and not torch.equal(f, p) for f, p in zip(flipped, plain)]
    kept = [torch.equal(f, p) for f, p in zip(flipped, plain)]
    assert any(mirrored) and any(kept) and all(m or k for m, k in zip(mirrored, kept))


def test_the_in_memory_order_keeps_its_published_key_layout(shards, originals):
    # Tokenizer runs must reproduce across vltk versions: epoch e of seed s is permutation([s, e, 0]) of the split.
    n = len(originals)
    data = ImageBatches(shards, "train", batch_size=BATCH, seed=5)
    stream = as_uint8(torch.cat(take(data, 2 * n // BATCH + 1)))
    for epoch in (0, 1):
        order = np.random.default_rng([5, epoch, 0]).permutation(n)
        assert torch.equal(stream[epoch * n:(epoch + 1) * n], originals[order])
