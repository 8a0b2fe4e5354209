"""vltk.data.panoptic and vltk.data.depth: the label formats round-trip exactly.

Expected values are written out by hand from the formats' definitions (COCO panoptic: id = R + 256 G + 256^2 B;
depth: millimetres in a 16-bit PNG), not computed by the code under test.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vltk.data import depth, panoptic


def test_panoptic_id_encoding_both_ways():
    ids = np.array([[0, 1, 255], [256, 65535, 65536], [70000, 1_000_000, panoptic.MAX_ID]])
    rgb = panoptic.id_to_rgb(ids)
    assert rgb[0, 2].tolist() == [255, 0, 0] and rgb[1, 0].tolist() == [0, 1, 0]
    assert rgb[1, 2].tolist() == [0, 0, 1]  # 65536 = 256^2: the blue channel
    assert rgb[2, 0].tolist() == [70000 % 256, 70000 // 256 % 256, 1]  # > 65535 needs all three channels
    assert rgb[2, 2].tolist() == [255, 255, 255]
    assert (panoptic.rgb_to_id(rgb) == ids).all()
    assert (panoptic.decode_png(panoptic.encode_png(ids)) == ids).all()
    with Image.open(io.BytesIO(panoptic.encode_png(ids))) as img:  # what any COCO reader sees: plain 8-bit RGB
        assert img.mode == "RGB" and (np.asarray(img) == rgb).all()
    with pytest.raises(ValueError, match="0..16777215"):
        panoptic.id_to_rgb(np.array([[panoptic.MAX_ID + 1]]))


def test_grey_png_is_no_panoptic_map():
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    with pytest.raises(ValueError, match="8-bit RGB"):
        panoptic.decode_png(buf.getvalue())


def test_segments_info_areas_are_pixel_counts():
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[1:3, 2:7] = 70000  # 2 x 5
    ids[4, 0] = 3
    listed = [{"id": 3, "category_id": 9, "area": 999, "bbox": [0, 0, 1, 1]},
              {"id": 70000, "category_id": 2, "iscrowd": 1}, {"id": 8, "category_id": 2}]  # 8 is not in the map
    out = panoptic.segments_info(ids, listed)
    assert out == [{"id": 3, "category_id": 9, "iscrowd": 0, "area": 1, "bbox": [0, 4, 1, 1]},
                   {"id": 70000, "category_id": 2, "iscrowd": 1, "area": 10, "bbox": [2, 1, 5, 2]}]
    assert sum(s["area"] for s in out) == (ids != panoptic.VOID).sum()
    with pytest.raises(ValueError, match="not in segments_info"):
        panoptic.segments_info(ids, listed[1:])
    with pytest.raises(ValueError, match="listed twice"):
        panoptic.segments_info(ids, [*listed, listed[0]])


def test_depth_png_round_trip_is_16_bit():
    units = np.array([[0, 1, 999], [1000, 40000, 65535]], dtype=np.uint16)
    data = depth.encode_png(units)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode.startswith("I")  # 16-bit greyscale, not 8-bit
    assert (depth.decode_png(data) == units).all() and depth.decode_png(data).dtype == np.uint16
    assert (depth.read(data, ".png") == units).all()
    assert depth.to_metres(units)[1].tolist() == pytest.approx([1.0, 40.0, 65.535])
    buf = io.BytesIO()
    Image.new("L", (2, 2)).save(buf, format="PNG")
    with pytest.raises(ValueError, match="16-bit"):
        depth.decode_png(buf.getvalue())


def test_depth_npy_metres_and_millimetres():
    metres = np.array([[0.0, 0.0004, 1.2345], [np.nan, -1.0, 70.0]])
    buf = io.BytesIO()
    np.save(buf, metres)
    assert depth.read(buf.getvalue(), ".npy").tolist() == [[0, 1, 1234], [0, 0, 65535]]  # 0.4 mm is measured: 1
    buf = io.BytesIO()
    np.save(buf, np.array([[0, 2500]], dtype=np.int32))
    assert depth.read(buf.getvalue(), ".npy").tolist() == [[0, 2500]]
    with pytest.raises(ValueError, match="png or .npy"):
        depth.read(b"", ".tif")
