"""Decode, validate, convert and resize one source image into the bytes a shard stores, or say why it was rejected.

    spec = ImageSpec(size=256, resize="center-crop", image_format="jpeg")
    out = prepare(Path("photo.jpg").read_bytes(), spec)   # JPEG bytes, or Rejection(reason="truncated", detail=...)

Every function here is pure (bytes in, bytes or a Rejection out) so that worker processes can run them and the same
input always gives the same output bytes. Rejections are the data's fault (empty, not an image, truncated, a
decompression bomb, too small); anything a source image can legally be (CMYK, palette, 16-bit, alpha, EXIF-rotated) is
converted to 8-bit RGB instead.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vltk.errors import VltkError

# Alpha and padding are composited onto white: a transparent logo on white is what a viewer shows.
BACKGROUND = (255, 255, 255)
# 16-bit greyscale modes PIL may open a 16-bit PNG/TIFF as; their range is 0..65535, which convert("L") would clip.
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    size: int
    resize: Literal["center-crop", "pad"] = "center-crop"
    image_format: Literal["png", "jpeg"] = "jpeg"
    quality: int = 95
    max_pixels: int = 89_478_485
    min_size: int = 8

    @property
    def ext(self) -> str:
        return "jpg" if self.image_format == "jpeg" else "png"


@dataclasses.dataclass(frozen=True)
class Rejection:
    reason: str  # a short stable name, counted in the manifest: "truncated", "too_many_pixels", ...
    detail: str = ""


def prepare_file(image: Path | bytes, spec: ImageSpec) -> bytes | Rejection:
    """`prepare` on a file's contents (or on bytes already read, e.g. from a tar); a missing file is a rejection."""
    data = read_file(image)
    return data if isinstance(data, Rejection) else prepare(data, spec)


def read_file(file: Path | bytes) -> bytes | Rejection:
    """The file's contents (bytes given are returned as they are); a missing or unreadable file is a rejection."""
    if isinstance(file, bytes):
        return file
    try:
        return Path(file).read_bytes()
    except FileNotFoundError:
        return Rejection("missing_file", str(file))
    except OSError as err:  # a directory, no permission: the source's fault, not the run's
        return Rejection("unreadable", f"{file}: {err.strerror or err}")


def prepare(data: bytes, spec: ImageSpec) -> bytes | Rejection:
    """Encoded `spec.size`-square RGB image, or the reason this input cannot become one."""
    img = load(data, spec)
    if isinstance(img, Rejection):
        return img
    rgb = upright_rgb(img)
    return rgb if isinstance(rgb, Rejection) else encode(fit(rgb, spec.size, spec.resize), spec)


def upright_rgb(img: Image.Image) -> Image.Image | Rejection:
    """The loaded image turned by its EXIF orientation, as 8-bit RGB."""
    try:
        return to_rgb(ImageOps.exif_transpose(img))
    except Exception as err:  # PIL raises many types on bad data; none of them may stop a shard run
        return decode_failure(err)


def load(data: bytes, spec: ImageSpec, *, draft: bool = True) -> Image.Image | Rejection:
    """Open and check the header (size limits) before decoding a single pixel, then decode. `draft`: let a large JPEG
    decode at a reduced scale (off where label maps must line up with the image's own pixels)."""
    if not data:
        return Rejection("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        return Rejection("too_many_pixels", str(err))
    except UnidentifiedImageError:
        return Rejection("not_an_image")
    except Exception as err:
        return decode_failure(err)
    width, height = img.size
    if width * height > spec.max_pixels:
        return Rejection("too_many_pixels", f"{width}x{height} > max_pixels={spec.max_pixels}")
    if min(width, height) < spec.min_size:
        return Rejection("too_small", f"{width}x{height} < min_size={spec.min_size}")
    if draft and img.format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while staying >= 2x the output, so big photos decode fast and
        # the final LANCZOS step still has real pixels to filter.
        img.draft(img.mode, (2 * spec.size, 2 * spec.size))
    try:
        img.load()
    except Exception as err:
        return decode_failure(err)
    return img


def decode_failure(err: Exception) -> Rejection:
    text = f"{type(err).__name__}: {err}"[:200]
    if isinstance(err, EOFError) or "truncated" in str(err).lower():
        return Rejection("truncated", text)
    return Rejection("decode_error", text)


def read_rgb(file: Path) -> Image.Image:
    """The picture in `file` as RGB, read into memory (no file stays open); a missing or broken one is one error."""
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise VltkError(f"{file} cannot be read as an image ({reason}); re-run the stage that wrote it") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit greyscale rescaled (not clipped), alpha and transparent palettes composited on white."""
    if img.mode in SIXTEEN_BIT:
        wide = np.asarray(img, dtype=np.float64)
        # 0..65535 -> 0..255, rounding to nearest (65535 -> 255, 32896 -> 128).
        img = Image.fromarray(np.rint(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8), mode="L")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def fit(img: Image.Image, size: int, resize: Literal["center-crop", "pad"], *, label: bool = False) -> Image.Image:
    """`img` as `size` x `size` by `resize`. `label`: `img` is a map of ids or depths (PIL mode "I" or "I;16"); it
    gets the image's crop box or placement exactly (they depend on the size only), NEAREST resampling (a pixel keeps
    one of the values around it, never a blend of two ids) and 0 (void, no depth) as padding."""
    resample = Image.Resampling.NEAREST if label else Image.Resampling.LANCZOS
    if resize == "center-crop":
        return center_crop(img, size, resample)
    return pad(img, size, 0 if label else BACKGROUND, resample)


def center_crop(img: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """Scale the shorter side to `size` and keep the centred square (the centre square is cut first, then resized)."""
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = img.crop((left, top, left + side, top + side))
    return _resize(square, (size, size), resample)


def pad(img: Image.Image, size: int, fill: int | tuple[int, int, int] = BACKGROUND,
        resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """Fit the whole image inside `size` x `size` (longer side = size), centred on a canvas of `fill` (white)."""
    width, height = img.size
    scale = size / max(width, height)
    fitted = _resize(img, (max(1, round(width * scale)), max(1, round(height * scale))), resample)
    canvas = Image.new(img.mode, (size, size), fill)
    canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return canvas


def _resize(img: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    if img.size == size:
        return img
    # reducing_gap: integer-factor box reduction first for big downscales, then LANCZOS (fast, visually identical).
    # PIL never reduces before NEAREST, so a label map's values are never averaged.
    return img.resize(size, resample, reducing_gap=3.0)


def encode(img: Image.Image, spec: ImageSpec) -> bytes:
    """PNG or JPEG with fixed settings and no metadata, so equal pixels always give equal bytes."""
    img = img.copy()
    img.info = {}  # an ICC profile or EXIF carried over from the source would be re-emitted by the PNG encoder
    buf = io.BytesIO()
    if spec.image_format == "png":
        img.save(buf, format="PNG", compress_level=6)
    else:
        # 4:4:4 chroma: small training images lose visible colour detail with 4:2:0 subsampling.
        img.save(buf, format="JPEG", quality=spec.quality, subsampling=0, optimize=False, progressive=False)
    return buf.getvalue()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model outputs (B, 3, H, W) in [-1, 1] -> pictures (B, H, W, 3) uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: np.ndarray, columns: int, min_side: int = 0) -> Image.Image:
    """(N, H, W, 3) uint8 pictures in rows of `columns`, 2 white pixels between and around them; pictures smaller
    than `min_side` are enlarged by an integer factor (nearest, so pixels stay visible)."""
    from torchvision.utils import make_grid  # here, not at the top: importing torchvision costs every stage ~1.5 s

    scale = max(1, -(-min_side // images.shape[1]))
    grid = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, 3, H, W)
    grid = grid.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    grid = make_grid(grid, nrow=columns, padding=2, pad_value=255)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())
