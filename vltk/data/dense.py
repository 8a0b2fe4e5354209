"""(image, dense label map) pairs of a shards artifact for UViM's tasks (GIVT §4.2): training batches on
`vltk.data.loader.SplitStream` (deterministic, resumable, rank-split) and the samples of a split in order.

    spec = LabelSpec(task="panoptic", categories=dense_categories(shards), max_instances=100)
    data = DenseBatches(shards, "train", spec, batch_size=64, seed=0)
    for images, labels, index in data(position=0):   # (64, 3, H, W) float in [-1, 1]; (64, H, W, C), (64,) long
        ...

The label channels are those of `vltk.labeltok.maps`: panoptic [semantic class, canonical instance] (C = 2), depth
[bin] (C = 1), the bins of `bin_depth` (an unmeasured pixel, 0 m, falls in bin 0 as in UViM's `bin_nyu_depth`).
Instances beyond `max_instances - 1` (COCO has up to 98 segments an image for UViM's 100) become void.
A sample without the task's label member (a caption-only source mixed in) is left out of the stream: `skipped` counts
those of the split, and a split with none labelled is a VltkError. Flips are off by default; `flip=True` mirrors an
image and its labels together with probability 1/2, drawn per stream position (UViM trains with fliplr; the shapes
captions say left and right, but stage I reads labels only). Panoptic labels are made canonical after the flip.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch

from vltk.data import depth as depth_png
from vltk.data.images import image_grid
from vltk.data.loader import SplitStream, split_size
from vltk.data.shards import DEPTH, PANOPTIC, Sample, decode_depth, decode_image, decode_panoptic, raw_samples, \
    read_tars, shard_paths
from vltk.errors import VltkError
from vltk.labeltok.maps import Categories, bin_depth, canonical_instances, colour_depth, colour_panoptic, panoptic_map
from vltk.records import ShardsContents


def dense_categories(shards: Path) -> Categories:
    """The panoptic categories of a shards artifact (its manifest's contents.categories): things, stuff, and the
    num_classes (void included) a panoptic model needs."""
    found = ShardsContents.read(shards).extra.get("categories")
    if not found:
        raise VltkError(f"{shards} lists no panoptic categories: shard a source with panoptic labels "
                        "(--format coco-panoptic, or a synth folder)")
    return Categories.from_coco(found)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelSpec:
    """Which label a task reads from a sample and how it becomes (H, W, C) integer channels."""

    task: Literal["panoptic", "depth"]
    categories: Categories | None = None  # panoptic
    max_instances: int = 100
    depth_bins: int = 256
    min_depth: float = 1e-3
    max_depth: float = 10.0

    def __post_init__(self) -> None:
        if self.task not in ("panoptic", "depth"):
            raise VltkError(f"unknown dense task {self.task!r}: panoptic or depth")
        if self.task == "panoptic" and self.categories is None:
            raise ValueError("panoptic labels need the data's categories")

    @property
    def member(self) -> str:
        """The sample member that carries the label."""
        return PANOPTIC if self.task == "panoptic" else DEPTH

    def labels(self, sample: Sample) -> np.ndarray:
        """(H, W, C) int64 label channels of a sample that has the member."""
        if self.task == "depth":
            metres = depth_png.to_metres(decode_depth(sample))
            bins = bin_depth(metres, min_depth=self.min_depth, max_depth=self.max_depth, bins=self.depth_bins)
            return bins[..., None]
        ids, segments = decode_panoptic(sample)
        labels = panoptic_map(ids, segments, self.categories)
        labels[..., 1][labels[..., 1] >= self.max_instances] = 0
        return labels


def labelled(spec: LabelSpec, samples: Iterator[Sample]) -> Iterator[Sample]:
    return (s for s in samples if spec.member in s.labels)


def count_labelled(shards: Path, split: str, spec: LabelSpec) -> tuple[int, int]:
    """(samples with the task's label, samples without) in `split`, reading only the json and label members."""
    total = split_size(ShardsContents.read(shards).splits, shards, split)
    members = raw_samples(shard_paths(shards, split), lambda name: name.endswith(spec.member))
    found = sum(1 for raw in members if spec.member in raw)
    return found, total - found


def _pair(spec: LabelSpec, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """((3, H, W) uint8 image, (H, W, C) int64 labels)."""
    image = np.asarray(decode_image(sample), dtype=np.uint8).transpose(2, 0, 1)
    labels = spec.labels(sample)
    if labels.shape[:2] != image.shape[1:]:
        raise VltkError(f"{sample.tar}: sample {sample.key}'s {spec.member} is {labels.shape[:2]}, its image "
                        f"{image.shape[1:]}; rebuild the shards")
    return image, labels


def iter_dense(shards: Path, split: str, spec: LabelSpec) -> Iterator[tuple[np.ndarray, np.ndarray, Sample]]:
    """((3, H, W) uint8 image, (H, W, C) int64 labels, the sample) of every labelled sample of `split`, in order."""
    for sample in labelled(spec, read_tars(shard_paths(shards, split))):
        yield (*_pair(spec, sample), sample)


class DenseBatches:
    """This process's share of each global batch of (image, labels) of `split` (see the module docstring)."""

    def __init__(self, shards: Path, split: str, spec: LabelSpec, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, flip: bool = False, in_memory_max: int = 100_000, shuffle_buffer: int = 2_000):
        self.spec, self.flip = spec, flip
        self.num_samples, self.skipped = count_labelled(shards, split, spec)
        if self.num_samples == 0:
            raise VltkError(f"{shards} has no {spec.task} labels ({spec.member}) in its '{split}' split")
        self.stream: SplitStream[Sample, tuple[np.ndarray, np.ndarray]] = SplitStream(
            shard_paths(shards, split), self.num_samples, name=f"{split}/{spec.task}",
            read=lambda paths: labelled(spec, read_tars(paths)), load=lambda s: _pair(spec, s), seed=seed,
            batch_size=batch_size, rank=rank, world_size=world_size, in_memory_max=in_memory_max,
            shuffle_buffer=shuffle_buffer)

    def __call__(self, position: int = 0, worker: int = 0, workers: int = 1
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """((b, 3, H, W) float32 in [-1, 1], (b, H, W, C) int64, (b,) int64 stream positions), b = batch_size /
        world_size, from `position`: global batch k holds positions [position + kB, position + (k+1)B)."""
        for items in self.stream(position, worker, workers):
            images = np.stack([image for _, (image, _) in items])
            labels = np.stack([label for _, (_, label) in items])
            if self.flip:
                for j, (q, _) in enumerate(items):
                    if self.stream.sample_rng(q, "flip").random() < 0.5:
                        images[j], labels[j] = images[j][..., ::-1], labels[j][:, ::-1]
                        if self.spec.task == "panoptic":
                            labels[j][..., 1] = canonical_instances(labels[j][..., 1])
            index = torch.tensor([q for q, _ in items], dtype=torch.long)
            yield torch.from_numpy(images).float() / 127.5 - 1.0, torch.from_numpy(labels), index


def ordered_chunks(shards: Path, split: str, spec: LabelSpec, size: int, count: int) -> Iterator[list[Sample]]:
    """The first `count` (0: all) labelled samples of `split` in order, `size` at a time, not yet decoded: a caller
    that needs only some batches (one process's share) decodes only those (`decode_chunk`)."""
    samples = labelled(spec, read_tars(shard_paths(shards, split)))
    samples = itertools.islice(samples, count) if count else samples
    while chunk := list(itertools.islice(samples, size)):
        yield chunk


def decode_chunk(spec: LabelSpec, chunk: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, list[Sample]]:
    """((b, 3, H, W) uint8 images, (b, H, W, C) labels, the samples) of a chunk of labelled samples."""
    pairs = [_pair(spec, sample) for sample in chunk]
    return (torch.from_numpy(np.stack([i for i, _ in pairs])), torch.from_numpy(np.stack([l for _, l in pairs])),
            chunk)


def ordered_batches(shards: Path, split: str, spec: LabelSpec, size: int, count: int
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[Sample]]]:
    """`decode_chunk` of each of `ordered_chunks`."""
    return (decode_chunk(spec, chunk) for chunk in ordered_chunks(shards, split, spec, size, count))


BASELINE_IS = {"panoptic": "the train split's most frequent class everywhere, one segment",
               "depth": "the train split's mean depth per pixel"}  # what `baseline` predicts, for reports


def baseline(shards: Path, split: str, spec: LabelSpec) -> np.ndarray:
    """The trivial prediction: panoptic (H, W, 2), every pixel the most frequent semantic class of `split` as one
    segment (instance 1); depth (H, W) float32, the mean measured depth of `split` at each pixel (metres)."""
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    for _, labels, sample in iter_dense(shards, split, spec):
        if spec.task == "panoptic":
            found = np.bincount(labels[..., 0].ravel(), minlength=spec.categories.num_classes)
            sums = found if sums is None else sums + found
        else:
            metres = depth_png.to_metres(decode_depth(sample)).astype(np.float64)
            valid = (metres > spec.min_depth) & (metres < spec.max_depth)
            sums = np.where(valid, metres, 0) + (0 if sums is None else sums)
            counts = valid.astype(np.int64) + (0 if counts is None else counts)
            shape = metres.shape
    if spec.task == "panoptic":
        sums[0] = 0  # void is no prediction
        return np.stack(np.broadcast_arrays(np.full(labels.shape[:2], int(sums.argmax())), 1), axis=-1)
    overall = sums.sum() / max(counts.sum(), 1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall).reshape(shape).astype(np.float32)


def scored_truth(spec: LabelSpec, labels: torch.Tensor, samples: list[Sample]) -> torch.Tensor:
    """What a prediction is scored against: panoptic, the label channels (B, H, W, 2) themselves; depth, the samples'
    measured depth (B, H, W) in metres, not its bins."""
    if spec.task == "panoptic":
        return labels
    return torch.from_numpy(np.stack([depth_png.to_metres(decode_depth(s)) for s in samples]))


def example(image: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor, spec: LabelSpec) -> np.ndarray:
    """(3, H, W, 3) uint8: a (3, H, W) uint8 image over its truth and a prediction, colourised (`scored_truth`'s
    and the prediction's layout)."""
    return np.stack([image.permute(1, 2, 0).numpy(), colour_labels(truth.numpy(), spec),
                     colour_labels(pred.numpy(), spec)])


def save_examples(examples: list[np.ndarray], file: Path) -> None:
    """A grid of `example`s, one a column: images on the top row, truths in the middle, predictions at the bottom."""
    grid = np.stack(examples, axis=1).reshape(-1, *examples[0].shape[1:])  # (3 N, H, W, 3), row-major
    image_grid(grid, columns=len(examples), min_side=64).save(file)


def colour_labels(labels: np.ndarray, spec: LabelSpec) -> np.ndarray:
    """(H, W, 2) panoptic labels or (H, W) depth in metres -> (H, W, 3) uint8 for people (`vltk.labeltok.maps`)."""
    if spec.task == "panoptic":
        return colour_panoptic(labels, spec.categories)
    return colour_depth(labels, min_depth=spec.min_depth, max_depth=spec.max_depth)
