"""Dense labels of the built-in shapes scenes: a COCO panoptic map and a depth map, rasterised from the geometry
`vltk.data.shapes.render` draws (the masks of `shapes.masks`: a pixel is an object's when the object covers more than
half of it), for the dense tasks of GIVT §4.2 / UViM (panoptic segmentation, depth).

Panoptic (COCO's format, `vltk.data.panoptic`): one "thing" category per shape and one "stuff" category for the
background. Shape, not colour-shape, is the category: 3 things instead of 18 keep every category frequent in a small
data set, and colour is what the judge already checks in the image. Segment ids: the background is 1, the scene's k-th
object 2 + k (k from 0, in the scene's order); no pixel is void.

Depth (`vltk.data.depth`, millimetres): the background is a floor seen from above, 8 m away at the image's top
row and 4 m at its bottom row (linear in the row's centre); each object is a flat card in front of it, at one depth
per object drawn uniformly per scene from 1.5-2.5 m when large and 2.5-3.5 m when small (larger looks nearer). The
draws come from their own random stream, seeded by (seed, index, "depth"): the images and captions do not move.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from vltk.data import shapes
from vltk.data.panoptic import segments_info

BACKGROUND = "background"
# COCO-style categories: ids 1..3 the shapes (things), 4 the background (stuff).
CATEGORIES: list[dict[str, Any]] = [
    *({"id": n + 1, "name": shape, "supercategory": "shape", "isthing": 1} for n, shape in enumerate(shapes.SHAPES)),
    {"id": len(shapes.SHAPES) + 1, "name": BACKGROUND, "supercategory": BACKGROUND, "isthing": 0},
]
CATEGORY_IDS = {c["name"]: c["id"] for c in CATEGORIES}
BACKGROUND_SEGMENT = 1
PLANE_METRES = (8.0, 4.0)  # the background's depth at the top and at the bottom row
OBJECT_METRES = {"large": (1.5, 2.5), "small": (2.5, 3.5)}  # nearer than the plane's nearest point


def depth_rng(seed: int, index: int) -> random.Random:
    """Scene `index`'s stream for depths, apart from the one its scene and captions come from."""
    return random.Random(f"vltk-synth/{seed}/{index}/depth")  # str seeds hash with SHA-512: stable across runs


def panoptic(masks: np.ndarray, scene: shapes.Scene) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(segment ids (H, W) int64, their COCO segments_info) of a scene whose objects cover `masks` (N, H, W)."""
    ids = np.full(masks.shape[1:], BACKGROUND_SEGMENT, dtype=np.int64)
    categories = {BACKGROUND_SEGMENT: CATEGORY_IDS[BACKGROUND]}
    for k, (mask, obj) in enumerate(zip(masks, scene)):
        ids[mask] = BACKGROUND_SEGMENT + 1 + k
        categories[BACKGROUND_SEGMENT + 1 + k] = CATEGORY_IDS[obj.shape]
    return ids, segments_info(ids, [{"id": i, "category_id": c} for i, c in categories.items()])


def depth(masks: np.ndarray, scene: shapes.Scene, rng: random.Random) -> np.ndarray:
    """(H, W) depth in metres (float64) of a scene whose objects cover `masks` (N, H, W)."""
    height = masks.shape[1]
    top, bottom = PLANE_METRES
    rows = (np.arange(height) + 0.5) / height  # row centres, 0 at the top edge, 1 at the bottom
    metres = np.repeat((top + (bottom - top) * rows)[:, None], masks.shape[2], axis=1)
    for mask, obj in zip(masks, scene):
        metres[mask] = rng.uniform(*OBJECT_METRES[obj.size])
    return metres
