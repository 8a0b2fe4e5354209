"""vltk.data.images: every image kind a source may hold is converted correctly or rejected with the right reason.

Expected pixels come from hand-computed values or from numpy/PIL operations done independently of the code under test
(np.rot90 for EXIF orientation, the CMYK and alpha-compositing formulas, 65535 -> 255 scaling).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vltk.data.images import ImageSpec, Rejection, prepare, prepare_file


def encoded(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pixels(out: bytes | Rejection) -> np.ndarray:
    assert isinstance(out, bytes), out
    with Image.open(io.BytesIO(out)) as img:
        assert img.mode == "RGB"
        return np.asarray(img).astype(int)


PNG = ImageSpec(size=16, image_format="png")


def test_cmyk_jpeg_becomes_rgb():
    cmyk = (0, 255, 255, 0), (255, 0, 0, 64), (0, 0, 0, 255)  # red, cyan at 75%, black
    for c, m, y, k in cmyk:
        out = pixels(prepare(encoded(Image.new("CMYK", (32, 32), (c, m, y, k)), "JPEG", quality=95), PNG))
        # Naive CMYK -> RGB: channel = (255 - ink) * (255 - K) / 255.
        expected = [(255 - ink) * (255 - k) / 255 for ink in (c, m, y)]
        assert np.abs(out.reshape(-1, 3).mean(0) - expected).max() < 6, (c, m, y, k)


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)  # index 0 blue (transparent), index 1 red
    img.paste(1, (0, 8, 16, 16))  # bottom half red
    out = pixels(prepare(encoded(img, transparency=0), PNG))
    assert (out[:8] == 255).all()  # transparent blue -> white, not blue
    assert (out[8:] == [255, 0, 0]).all()


def test_palette_without_transparency_keeps_colours():
    img = Image.new("P", (16, 16), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (pixels(prepare(encoded(img), PNG)) == [10, 200, 30]).all()


def test_16_bit_greyscale_is_rescaled_not_clipped():
    values = [0, 257, 1000, 32896, 65280, 65535, 65535, 0]
    img = Image.new("I;16", (8, 8))
    img.putdata(values * 8)  # every row holds the values
    out = pixels(prepare(encoded(img), ImageSpec(size=8, image_format="png")))
    expected = [0, 1, 4, 128, 254, 255, 255, 0]  # round(v * 255 / 65535), by hand
    assert (out[..., 0] == expected).all() and (out[..., 0] == out[..., 2]).all()


@pytest.mark.parametrize("mode, colour, expected", [
    ("LA", (0, 128), [127, 127, 127]),  # 0 * 128/255 + 255 * 127/255 = 127
    ("RGBA", (255, 0, 0, 64), [255, 191, 191]),  # 255 * 191/255 = 191
    ("RGBA", (0, 0, 0, 0), [255, 255, 255]),
    ("RGBA", (10, 20, 30, 255), [10, 20, 30]),
])
def test_alpha_is_composited_on_white(mode, colour, expected):
    out = pixels(prepare(encoded(Image.new(mode, (16, 16), colour)), PNG))
    assert np.abs(out - expected).max() <= 1


@pytest.mark.parametrize("orientation, k", [(6, -1), (8, 1), (3, 2)])  # 6: turn clockwise, 8: counter-clockwise
def test_exif_orientation_is_applied(orientation, k):
    stored = np.zeros((32, 64, 3), np.uint8)  # 64 wide, 32 high: red left half, blue right half, a green corner
    stored[:, :32] = [255, 0, 0]
    stored[:, 32:] = [0, 0, 255]
    stored[:8, :8] = [0, 255, 0]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    shown = np.rot90(stored, k=k)  # what a viewer displays
    side = min(shown.shape[:2])
    top, left = (shown.shape[0] - side) // 2, (shown.shape[1] - side) // 2
    expected = shown[top:top + side, left:left + side].astype(int)
    spec = ImageSpec(size=side, image_format="png")
    out = pixels(prepare(data, spec))
    assert np.abs(out - expected).mean() < 4
    # The unrotated crop is far from it: the check can tell orientations apart.
    unrotated = pixels(prepare(encoded(Image.fromarray(stored), "JPEG", quality=95), spec))
    assert np.abs(unrotated - expected).mean() > 50


def _jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return encoded(Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)), "JPEG")


@pytest.mark.parametrize("data, reason", [
    (b"", "empty_file"),
    (_jpeg()[: len(_jpeg()) // 2], "truncated"),
    (np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_an_image"),
    (b"a caption, not a picture\n", "not_an_image"),
    (encoded(Image.new("RGB", (4, 20))), "too_small"),
])
def test_bad_inputs_are_rejected_with_their_reason(data, reason):
    out = prepare(data, ImageSpec(size=16))
    assert isinstance(out, Rejection) and out.reason == reason


def test_files_are_read_and_missing_or_text_files_rejected(tmp_path):
    (tmp_path / "notes.jpg").write_text("just some text")
    (tmp_path / "ok.png").write_bytes(encoded(Image.new("RGB", (20, 20), (1, 2, 3))))
    assert prepare_file(tmp_path / "notes.jpg", PNG).reason == "not_an_image"
    assert prepare_file(tmp_path / "gone.jpg", PNG).reason == "missing_file"
    assert prepare_file(tmp_path, PNG).reason == "unreadable"
    assert (pixels(prepare_file(tmp_path / "ok.png", PNG)) == [1, 2, 3]).all()


def _with_size_in_header(png: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR to claim another size (and fix its CRC, which PIL checks)."""
    assert png[12:16] == b"IHDR"
    body = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + png[33:]


@pytest.mark.parametrize("side", [100_000, 10_000])  # beyond PIL's own 2x bomb limit / between 1x and 2x of it
def test_decompression_bomb_is_rejected_from_the_header(side):
    bomb = _with_size_in_header(encoded(Image.new("RGB", (8, 8))), side, side)
    out = prepare(bomb, ImageSpec(size=16))
    # Decoding would have failed as truncated (8x8 pixels of data): the size check came first.
    assert isinstance(out, Rejection) and out.reason == "too_many_pixels"


def test_max_pixels_is_configurable():
    data = encoded(Image.new("RGB", (40, 30)))
    assert prepare(data, ImageSpec(size=16, max_pixels=1199)).reason == "too_many_pixels"
    assert isinstance(prepare(data, ImageSpec(size=16, max_pixels=1200)), bytes)


def _bands() -> np.ndarray:
    """80 wide x 40 high: red columns 0-19, a green/black checker in columns 20-59, blue columns 60-79."""
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :20] = [255, 0, 0]
    arr[:, 60:] = [0, 0, 255]
    checker = (np.add.outer(np.arange(40), np.arange(40)) % 2 == 0)
    arr[:, 20:60][checker] = [0, 255, 0]
    return arr


def test_center_crop_keeps_the_centre_square():
    arr = _bands()
    out = pixels(prepare(encoded(Image.fromarray(arr)), ImageSpec(size=40, image_format="png")))
    assert (out == arr[:, 20:60]).all()  # shorter side already 40: an exact crop, pixel for pixel
    small = pixels(prepare(encoded(Image.fromarray(arr)), ImageSpec(size=10, image_format="png")))
    # Downscaled 4x: the checker averages to half green, and no red or blue from the cut-off sides leaks in.
    assert np.abs(small - [0, 128, 0]).max() <= 3


def test_pad_fits_the_whole_image_on_white():
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = [255, 0, 0]
    arr[:, 40:] = [0, 0, 255]
    out = pixels(prepare(encoded(Image.fromarray(arr)), ImageSpec(size=40, resize="pad", image_format="png")))
    assert (out[:10] == 255).all() and (out[30:] == 255).all()  # 80x40 -> 40x20, centred: 10 white rows each side
    assert np.abs(out[10:30, :18] - [255, 0, 0]).max() <= 2
    assert np.abs(out[10:30, 22:] - [0, 0, 255]).max() <= 2


def test_big_jpeg_decodes_reduced_but_close_to_a_full_decode():
    rng = np.random.default_rng(2)
    coarse = Image.fromarray(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8))
    data = encoded(coarse.resize((2000, 1500), Image.Resampling.BICUBIC), "JPEG", quality=95)
    out = pixels(prepare(data, ImageSpec(size=64, image_format="png")))
    # Reference: decode every pixel, cut the centre 1500 x 1500, one LANCZOS resize.
    full = Image.open(io.BytesIO(data)).convert("RGB").crop((250, 0, 1750, 1500))
    full = full.resize((64, 64), Image.Resampling.LANCZOS)
    assert np.abs(out - np.asarray(full).astype(int)).mean() < 2


def test_output_is_deterministic_and_free_of_source_metadata():
    img = Image.fromarray(_bands())
    data = encoded(img, icc_profile=b"not really a profile", dpi=(300, 300))
    for fmt in ("png", "jpeg"):
        spec = ImageSpec(size=24, image_format=fmt, quality=90)
        first, second = prepare(data, spec), prepare(data, spec)
        assert first == second
        with Image.open(io.BytesIO(first)) as out:
            assert out.format == fmt.upper() and out.size == (24, 24) and "icc_profile" not in out.info
