"""Prepare a record for a shard: its image as `vltk.data.images` does, and its dense labels (`sources.Labels`) in the
same pixels, or the reason the record cannot be used.

    out = prepare_sample((Path("img.jpg"), Labels(panoptic=Path("img.png"), segments=(...,))), spec)
    # (image bytes, {"panoptic.png": ..., "segments.json": ...}), or Rejection(reason="bad_panoptic", ...)

A label map is in the source image's stored pixels (COCO's panoptic PNGs, NYU's depth): it must have the image's
size, and it is turned by the image's EXIF orientation, cropped or padded like the image and resized with NEAREST
(`images.fit(..., label=True)`). The image is then decoded at full scale (no JPEG draft), so that both have one pixel
grid. Segment areas and boxes are counted again in the output map; a segment no pixel of which is left is dropped.
Pure, like `vltk.data.images`: worker processes run it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import ExifTags, Image

from vltk.data import depth, panoptic
from vltk.data.images import ImageSpec, Rejection, encode, fit, load, prepare_file, read_file, upright_rgb
from vltk.data.shards import DEPTH, PANOPTIC, SEGMENTS
from vltk.data.sources import Labels

Prepared = tuple[bytes, dict[str, bytes]]  # the encoded image, and its label members (shards.LABEL_MEMBERS)
# The EXIF orientation tag's values and the turn that makes each upright (PIL's ImageOps.exif_transpose applies these).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def prepare_sample(inputs: tuple[Path | bytes, Labels | None], spec: ImageSpec) -> Prepared | Rejection:
    """(image, labels) -> the shard's image bytes and label members; an image without labels is `prepare_file`'s."""
    image, labels = inputs
    if labels is None:
        out = prepare_file(image, spec)
        return out if isinstance(out, Rejection) else (out, {})
    data = read_file(image)
    img = data if isinstance(data, Rejection) else load(data, spec, draft=False)
    if isinstance(img, Rejection):
        return img
    rgb = upright_rgb(img)
    if isinstance(rgb, Rejection):
        return rgb
    turn = UPRIGHT.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    members: dict[str, bytes] = {}
    if labels.panoptic is not None:
        ids = _label_map(labels.panoptic, "panoptic", panoptic.decode_png, img.size)
        if isinstance(ids, Rejection):
            return ids
        ids = np.asarray(_fit(Image.fromarray(ids.astype(np.int32)), turn, spec), dtype=np.int64)
        try:
            segments = panoptic.segments_info(ids, labels.segments)
        except ValueError as err:
            return Rejection("bad_segments", str(err)[:200])
        members |= {PANOPTIC: panoptic.encode_png(ids), SEGMENTS: json.dumps(segments).encode()}
    if labels.depth is not None:
        suffix = Path(labels.depth).suffix if isinstance(labels.depth, Path) else ".png"
        units = _label_map(labels.depth, "depth", lambda b: depth.read(b, suffix), img.size)
        if isinstance(units, Rejection):
            return units
        members[DEPTH] = depth.encode_png(np.asarray(_fit(Image.fromarray(units), turn, spec), dtype=np.uint16))
    return encode(fit(rgb, spec.size, spec.resize), spec), members


def _label_map(file: Path | bytes, kind: str, decode: Callable[[bytes], np.ndarray], size: tuple[int, int],
               ) -> np.ndarray | Rejection:
    """The (H, W) map `decode` reads from `file`, checked to be `size` = (W, H); missing_/bad_{kind} otherwise."""
    data = read_file(file)
    if isinstance(data, Rejection):
        return Rejection(f"{'missing' if data.reason == 'missing_file' else 'bad'}_{kind}", data.detail)
    try:
        values = decode(data)
    except Exception as err:  # PIL and numpy raise many types on bad data; none of them may stop a shard run
        return Rejection(f"bad_{kind}", f"{type(err).__name__}: {err}"[:200])
    if values.shape[::-1] != size:
        height, width = values.shape
        return Rejection("label_size_mismatch", f"{kind} {width}x{height}, image {size[0]}x{size[1]}")
    return values


def _fit(label: Image.Image, turn: Image.Transpose | None, spec: ImageSpec) -> Image.Image:
    return fit(label if turn is None else label.transpose(turn), spec.size, spec.resize, label=True)
