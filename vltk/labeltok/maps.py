"""Label maps of UViM's dense tasks as the label autoencoder sees them, and back: pure numpy.

Panoptic (big_vision big_vision/pp/proj/uvim/pp_ops.py, `coco_panoptic` then `make_canonical`): an (H, W, 2) int64
map of [semantic class, instance]. The semantic class is 1 + the category's index in the shards' category list (sorted
by id; COCO's 133 categories become 1..133 as UViM's `label + 1`), 0 = void. Every segment, stuff included, gets an
instance id 1..N in canonical order: by centre of mass, y-major (sort key x̄ + H ȳ); 0 = void. UViM numbers stuff
segments too, so that `panoptic_predictions_from_logits` (vltk.labeltok.model.panoptic_from_logits) gives each stuff
region its own class; vltk.metrics.dense.PanopticQuality ignores a stuff segment's instance id.

Depth (big_vision pp/proj/givt/pp_ops.py `bin_nyu_depth`, trainers/proj/givt/utils.py `unbin_depth`): bin
floor((d - min) / (max - min) * bins) clipped to [0, bins - 1]; a bin decodes to its centre, (b + 0.5) / bins *
(max - min) + min metres.

    cats = Categories.from_coco(contents.extra["categories"])
    labels = panoptic_map(ids, segments, cats)            # (H, W, 2)
    ids, segments = to_coco(labels, cats)                 # vltk.data.panoptic's format again
"""

from __future__ import annotations

import colorsys
import dataclasses
from typing import Any, Sequence

import numpy as np

from vltk.data.panoptic import segments_info

VOID = 0


@dataclasses.dataclass(frozen=True)
class Categories:
    """The panoptic categories of a data set: COCO ids in class order (class c = ids[c - 1]) and which are things."""

    ids: tuple[int, ...]
    isthing: tuple[bool, ...]

    @classmethod
    def from_coco(cls, categories: Sequence[dict[str, Any]]) -> Categories:
        """From COCO's category list ({id, isthing, ...}), sorted by id."""
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in ordered), tuple(bool(c.get("isthing", 0)) for c in ordered))

    @property
    def num_classes(self) -> int:
        """Semantic classes including void."""
        return len(self.ids) + 1

    @property
    def things(self) -> list[int]:
        """The semantic classes of things (1-based)."""
        return [c + 1 for c, thing in enumerate(self.isthing) if thing]

    @property
    def stuff(self) -> list[int]:
        return [c + 1 for c, thing in enumerate(self.isthing) if not thing]

    def semantic(self, category_id: int) -> int:
        """The semantic class of a COCO category id."""
        return self.ids.index(category_id) + 1


def canonical_instances(instances: np.ndarray) -> np.ndarray:
    """(H, W) int ids (<= 0: void) -> (H, W) int64 renumbered 1..N by centre of mass, y-major, 0 = void (UViM's
    make_canonical with main_sort_axis="y": key = mean x + H * mean y; ties keep id order)."""
    ids = np.unique(instances[instances > 0])
    out = np.zeros(instances.shape, dtype=np.int64)
    if not len(ids):
        return out
    keys = []
    for i in ids:
        ys, xs = np.nonzero(instances == i)
        keys.append(xs.mean() + instances.shape[0] * ys.mean())
    for rank, k in enumerate(np.argsort(keys, kind="stable")):
        out[instances == ids[k]] = rank + 1
    return out


def panoptic_map(ids: np.ndarray, segments: Sequence[dict[str, Any]], categories: Categories) -> np.ndarray:
    """COCO segment ids (H, W) + their segments_info -> (H, W, 2) int64 [semantic class, canonical instance]. Crowd
    segments and ids not listed are void."""
    semantic = np.zeros(ids.shape, dtype=np.int64)
    instance = np.zeros(ids.shape, dtype=np.int64)
    for segment in segments:
        if segment.get("iscrowd", 0):
            continue
        mask = ids == segment["id"]
        semantic[mask] = categories.semantic(segment["category_id"])
        instance[mask] = segment["id"]
    return np.stack([semantic, canonical_instances(instance)], axis=-1)


def to_coco(labels: np.ndarray, categories: Categories) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(H, W, 2) [semantic, instance] -> (segment ids (H, W) int64, segments_info): one segment per (class,
    instance) of a thing and per class of stuff (COCO has one segment per stuff class), numbered 1.. in canonical
    order of their first instance; void class or void instance -> id 0."""
    semantic, instance = labels[..., 0].astype(np.int64), labels[..., 1].astype(np.int64)
    stuff = np.isin(semantic, categories.stuff)
    key = np.where(stuff, 0, instance)  # a stuff class is one segment whatever its instance ids
    valid = (semantic != VOID) & (instance != VOID)
    pairs = np.unique(np.stack([semantic[valid], key[valid]], axis=1), axis=0)  # (P, 2) distinct (class, key)
    masks = [valid & (semantic == s) & (key == k) for s, k in pairs]
    order = np.argsort([instance[m].min() for m in masks], kind="stable")
    ids = np.zeros(semantic.shape, dtype=np.int64)
    for n, p in enumerate(order, start=1):
        ids[masks[p]] = n
    listed = [{"id": n, "category_id": categories.ids[int(pairs[p][0]) - 1]} for n, p in enumerate(order, start=1)]
    return ids, segments_info(ids, listed)


def bin_depth(metres: np.ndarray, *, min_depth: float, max_depth: float, bins: int) -> np.ndarray:
    """(...) metres -> (...) int64 bins floor((d - min) / (max - min) * bins) clipped to [0, bins - 1]."""
    scaled = (np.asarray(metres, dtype=np.float64) - min_depth) / (max_depth - min_depth) * bins
    return np.clip(np.floor(scaled), 0, bins - 1).astype(np.int64)


def unbin_depth(bins_map: np.ndarray, *, min_depth: float, max_depth: float, bins: int) -> np.ndarray:
    """(...) bins -> (...) float32 metres at the bins' centres, (b + 0.5) / bins * (max - min) + min."""
    return ((np.asarray(bins_map, dtype=np.float64) + 0.5) / bins * (max_depth - min_depth) + min_depth
            ).astype(np.float32)


def colour_panoptic(labels: np.ndarray, categories: Categories) -> np.ndarray:
    """(H, W, 2) [semantic, instance] -> (H, W, 3) uint8 for people: a hue per class, instances of a thing in
    alternating brightness, void black."""
    semantic, instance = labels[..., 0], labels[..., 1]
    classes = categories.num_classes - 1
    out = np.zeros((*semantic.shape, 3), dtype=np.uint8)
    for s in np.unique(semantic[semantic != VOID]):
        thing = bool(categories.isthing[int(s) - 1])
        for i in np.unique(instance[semantic == s]) if thing else [None]:
            mask = semantic == s if i is None else (semantic == s) & (instance == i)
            value = 0.95 if i is None else (0.95, 0.6)[int(i) % 2]
            rgb = colorsys.hsv_to_rgb((int(s) - 1) / max(classes, 1), 0.75 if thing else 0.35, value)
            out[mask] = np.round(np.array(rgb) * 255).astype(np.uint8)
    return out


def colour_depth(metres: np.ndarray, *, min_depth: float, max_depth: float) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8: near bright (warm), far dark (cool), on a log scale over [min, max]."""
    t = np.clip((np.log(np.clip(metres, min_depth, max_depth)) - np.log(min_depth))
                / (np.log(max_depth) - np.log(min_depth)), 0, 1)
    rgb = np.stack([1 - t, 1 - np.abs(2 * t - 1), t], axis=-1) * (1 - 0.6 * t[..., None])
    return np.round(rgb * 255).astype(np.uint8)
