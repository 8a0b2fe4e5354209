"""Depth maps as 16-bit PNGs in millimetres, the layout of NYU Depth v2 exports and of vltk's shards.

A depth label is a single-channel 16-bit PNG whose value is the depth in millimetres (`SCALE` units per metre, so
0.001 m steps up to 65.535 m; indoor NYU depths are below 10 m) and 0 means no measurement (a sensor hole, or padding
added by `vltk shard --resize pad`). GIVT (§4.2, Table 3) and UViM (Kolesnikov et al., NeurIPS 2022) estimate depth on
NYU Depth v2, which is distributed in metres; `read` also takes such arrays as .npy:

    units = read(Path("depth/0001.npy").read_bytes(), ".npy")   # (H, W) uint16 millimetres
    metres = to_metres(units)                                    # (H, W) float32, 0 where unmeasured
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SCALE = 1000  # stored units per metre: millimetres
NO_DEPTH = 0
SUFFIXES = (".png", ".npy")  # what a depth file may be, in the order a folder is searched


def to_units(metres: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W) uint16 millimetres, rounded; not finite or <= 0 -> NO_DEPTH, beyond 65.535 m clipped."""
    metres = np.asarray(metres, dtype=np.float64)
    valid = np.isfinite(metres) & (metres > 0)
    units = np.rint(np.clip(np.where(valid, metres, 0) * SCALE, 0, 65535))
    return np.where(valid, np.maximum(units, 1), NO_DEPTH).astype(np.uint16)  # a measured depth never reads as 0


def to_metres(units: np.ndarray) -> np.ndarray:
    """(H, W) uint16 millimetres -> (H, W) float32 metres (NO_DEPTH stays 0)."""
    return np.asarray(units, dtype=np.float32) / SCALE


def encode_png(units: np.ndarray) -> bytes:
    """(H, W) uint16 millimetres -> a 16-bit greyscale PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(units, dtype=np.uint16)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """A 16-bit greyscale PNG -> (H, W) uint16; a ValueError for any other PNG (8 bits cannot hold millimetres)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"a depth PNG is 16-bit greyscale, got mode {img.mode}")
        values = np.asarray(img)
    if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
        raise ValueError("a depth PNG's values are 16-bit")
    return values.astype(np.uint16)


def read(data: bytes, suffix: str) -> np.ndarray:
    """A depth file's bytes -> (H, W) uint16 millimetres. `suffix` ".png": a 16-bit PNG; ".npy": an (H, W) array, of
    metres when floating point (NYU's own unit), of millimetres when integer. A ValueError says what is wrong."""
    if suffix.lower() == ".png":
        return decode_png(data)
    if suffix.lower() != ".npy":
        raise ValueError(f"a depth file is {' or '.join(SUFFIXES)}, got {suffix!r}")
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.ndim != 2:
        raise ValueError(f"a depth array is (H, W), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        return to_units(array)
    if not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0 or array.max(initial=0) > 65535:
        raise ValueError(f"an integer depth array holds millimetres in 0..65535, got {array.dtype}")
    return array.astype(np.uint16)
