"""COCO panoptic segmentation labels: the PNG id encoding and the per-image `segments_info`.

The format is COCO's panoptic one (Kirillov et al., "Panoptic Segmentation", CVPR 2019; github.com/cocodataset/
panopticapi, whose `utils.rgb2id` / `id2rgb` this restates): an image's label is an RGB PNG in which each pixel's
segment id is R + 256 G + 256^2 B (id 0 = void, unlabelled), and the annotation lists each segment as

    {"id": 5, "category_id": 2, "iscrowd": 0, "area": 120, "bbox": [x, y, w, h]}

with the area in pixels and the bounding box in pixels (x, y of its top-left pixel, its width and height); the
category says whether the segment is a "thing" (countable, isthing 1) or "stuff" (isthing 0). GIVT (§4.2, §5.2) and
UViM (Kolesnikov et al., NeurIPS 2022) train and score panoptic segmentation on COCO in this format.

    ids = rgb_to_id(np.asarray(Image.open("panoptic_val2017/000000000139.png")))   # (H, W) int64
    segments = segments_info(ids, annotation["segments_info"])                      # areas and boxes recomputed
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from PIL import Image

VOID = 0
MAX_ID = 256**3 - 1  # three 8-bit channels


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer ids in 0..MAX_ID -> (H, W, 3) uint8; a ValueError for an id out of range."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_ID):
        raise ValueError(f"segment ids must be in 0..{MAX_ID}, got {ids.min()}..{ids.max()}")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def encode_png(ids: np.ndarray) -> bytes:
    """(H, W) segment ids -> the label's RGB PNG."""
    buf = io.BytesIO()
    Image.fromarray(id_to_rgb(ids), mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """A label PNG -> (H, W) int64 ids; a ValueError when it is not 8-bit RGB (a palette or grey PNG is no id map)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in ("RGB", "RGBA"):
            raise ValueError(f"a panoptic PNG is 8-bit RGB, got mode {img.mode}")
        return rgb_to_id(np.asarray(img.convert("RGB")))


def segments_info(ids: np.ndarray, segments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listed segments found in `ids` (H, W), in their order, with the area and bbox of their pixels there (a
    resized map has other areas than the source's). A segment with no pixel left is dropped; a ValueError when a
    pixel's id is not listed, or a segment lacks an integer id or category_id, or an id is listed twice."""
    found, counts = np.unique(ids, return_counts=True)
    area = dict(zip(found.tolist(), counts.tolist()))
    listed = set()
    out = []
    for segment in segments:
        if not isinstance(segment, dict) or not all(isinstance(segment.get(k), int) for k in ("id", "category_id")):
            raise ValueError(f"a segment needs integer 'id' and 'category_id': {str(segment)[:80]}")
        sid = segment["id"]
        if sid in listed or sid == VOID:
            raise ValueError(f"segment id {sid} is " + ("void" if sid == VOID else "listed twice"))
        listed.add(sid)
        if sid in area:
            out.append({"id": sid, "category_id": segment["category_id"], "iscrowd": int(segment.get("iscrowd", 0)),
                        "area": area[sid], "bbox": bbox(ids == sid)})
    unlisted = sorted(set(area) - listed - {VOID})
    if unlisted:
        raise ValueError(f"{len(unlisted)} id(s) in the PNG not in segments_info (first: {unlisted[0]})")
    return out


def bbox(mask: np.ndarray) -> list[int]:
    """[x, y, w, h] of the True pixels of a non-empty (H, W) mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
