"""The encoded artifact's on-disk format: WebDataset tars of image tokens (or latents) plus text ids, per split.

    for record in iter_encoded(Path("build/demo/encoded"), "train"):
        record.image["codes"]      # (h, w) uint16 (int32 when the codebook has more than 65,536 codes)
        record.text                # (n_captions, context) int32, MAGVLT rows (EOS = PAD)

Layout of an encoded artifact (written by `vltk encode`):

    encoded/
      manifest.json      contents.splits.<split> = {samples, captions, shards: [file names]}, kind, grid_size, ...
      train-000000-000.tar ...          {split}-{input tar index:06d}-{k:03d}.tar
      mixsel-train-000000-000.tar ...   MixSel pairs of the train images

A sample of a plain split is
    key.codes.npy                   VQ: (h, w) token grid, uint16 or int32
    key.mean.npy, key.logvar.npy    VAE: (d, h, w) float16 posterior; a generator samples z from them every step
    key.text.npy                    (n_captions, context) int32
    key.json                        {"captions": [...], "source": ..., "meta": {...}}: raw captions for BPE-dropout
A sample of a `mixsel-<split>` split is the mixed image's `codes.npy` (or `mean.npy` / `logvar.npy`), the unmixed
`a.codes.npy` / `b.codes.npy` (or `a.mean.npy`, ...), `a.text.npy` / `b.text.npy`, and `key.json` =
{"direction": "horizontal" | "vertical", "a": {"key", "captions", "source", "meta"}, "b": {...}}; A is the left (top)
half of a horizontal (vertical) mix.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from vltk.data.schema import Shape
from vltk.data.shards import ABOUT, TarSetWriter, raw_samples, split_paths
from vltk.data.tars import member
from vltk.records import Stage

STAGE = Stage.ENCODE
Kind = Literal["vq", "vae"]
# What the image part of a record holds, by kind, with the stored dtype and number of dimensions.
IMAGE_FIELDS: dict[str, tuple[str, ...]] = {"vq": ("codes",), "vae": ("mean", "logvar")}
LATENT_DTYPE = np.dtype(np.float16)
TEXT_DTYPE = np.dtype(np.int32)
# The JSON member of a MixSel sample: the direction and both source records (a plain sample's is shards.ABOUT).
PART = Shape({"key": str, **ABOUT.required}, optional=ABOUT.optional)
PAIR = Shape({"direction": Literal["horizontal", "vertical"], "a": PART, "b": PART})


def codes_dtype(codebook_size: int) -> np.dtype:
    """uint16 while every code id fits (codebook <= 65,536), else int32."""
    return np.dtype(np.uint16) if codebook_size <= 1 << 16 else np.dtype(np.int32)


def mixsel_split(split: str) -> str:
    """The name of the split holding MixSel pairs of `split`'s images."""
    return f"mixsel-{split}"


@dataclasses.dataclass(frozen=True)
class EncodedSample:
    """One image with its captions, encoded."""

    key: str
    image: dict[str, np.ndarray]  # {"codes": (h, w)} or {"mean": (d, h, w), "logvar": (d, h, w)}
    text: np.ndarray  # (n_captions, context) int32
    captions: tuple[str, ...]
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MixSel:
    """A MixSel pair: the mixed image's codes/latents, and both source records whole (so no lookup is needed)."""

    key: str
    direction: Literal["horizontal", "vertical"]
    image: dict[str, np.ndarray]  # the mixed image, same fields as EncodedSample.image
    a: EncodedSample  # left (horizontal) or top (vertical) half
    b: EncodedSample


def image_kind(image: dict[str, np.ndarray]) -> Kind:
    for kind, fields in IMAGE_FIELDS.items():
        if set(image) == set(fields):
            return kind  # type: ignore[return-value]
    raise ValueError(f"an encoded image holds {' or '.join(map(str, IMAGE_FIELDS.values()))}, got {sorted(image)}")


def check_image(image: dict[str, np.ndarray]) -> None:
    """The stored dtypes and ranks: codes (h, w) uint16/int32; mean and logvar (d, h, w) float16 of one shape."""
    if image_kind(image) == "vq":
        codes = image["codes"]
        if codes.dtype not in (np.uint16, np.int32) or codes.ndim != 2:
            raise ValueError(f"codes must be (h, w) uint16 or int32, got {codes.shape} {codes.dtype}")
        return
    mean, logvar = image["mean"], image["logvar"]
    if mean.dtype != LATENT_DTYPE or logvar.dtype != LATENT_DTYPE or mean.ndim != 3 or mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must be (d, h, w) float16 of one shape, got {mean.shape} {mean.dtype} "
                         f"and {logvar.shape} {logvar.dtype}")


def check_text(text: np.ndarray, captions: tuple[str, ...]) -> None:
    if text.dtype != TEXT_DTYPE or text.ndim != 2 or len(text) != len(captions):
        raise ValueError(f"text must be ({len(captions)}, context) int32 (one row per caption), "
                         f"got {text.shape} {text.dtype}")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _entries(record: EncodedSample, prefix: str = "") -> dict[str, bytes]:
    check_image(record.image)
    check_text(record.text, record.captions)
    entries = {f"{prefix}{name}.npy": npy_bytes(array) for name, array in record.image.items()}
    entries[f"{prefix}text.npy"] = npy_bytes(record.text)
    return entries


def _about(record: EncodedSample) -> dict[str, Any]:
    return {"captions": list(record.captions), "source": record.source, "meta": record.meta}


def pack(record: EncodedSample | MixSel) -> dict[str, Any]:
    """A record as a WebDataset sample: {"__key__": key, "<field>.npy": bytes, ..., "json": bytes}."""
    if isinstance(record, EncodedSample):
        return {"__key__": record.key, **_entries(record), "json": json.dumps(_about(record)).encode()}
    check_image(record.image)
    shapes = {name: array.shape for name, array in record.image.items()}
    if any(shapes != {name: array.shape for name, array in part.image.items()} for part in (record.a, record.b)):
        raise ValueError("a MixSel record's mixed and unmixed images must be of one kind and shape")
    about = {"direction": record.direction, "a": {"key": record.a.key, **_about(record.a)},
             "b": {"key": record.b.key, **_about(record.b)}}
    return {
        "__key__": record.key,
        **{f"{name}.npy": npy_bytes(array) for name, array in record.image.items()},
        **_entries(record.a, "a."),
        **_entries(record.b, "b."),
        "json": json.dumps(about).encode(),
    }


def _image(raw: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    kind = "vq" if f"{prefix}codes.npy" in raw else "vae"
    return {name: member(raw, f"{prefix}{name}.npy", npy_array) for name in IMAGE_FIELDS[kind]}


def _encoded(raw: dict[str, Any], about: dict[str, Any], key: str, prefix: str = "") -> EncodedSample:
    return EncodedSample(key=key, image=_image(raw, prefix), text=member(raw, f"{prefix}text.npy", npy_array),
                   captions=tuple(about["captions"]), source=about.get("source", ""), meta=about.get("meta", {}))


def _parse_about(data: bytes) -> dict[str, Any]:
    """A sample's JSON member, checked: a MixSel pair's when it has a direction, else a plain record's."""
    about = json.loads(data)
    return (PAIR if isinstance(about, dict) and "direction" in about else ABOUT).check(about)


def unpack(raw: dict[str, Any]) -> EncodedSample | MixSel:
    """The inverse of `pack`: a MixSel when the sample has a direction, else an EncodedSample; a missing or damaged
    member is a VltkError naming the tar and the member."""
    about = member(raw, "json", _parse_about)
    if "direction" not in about:
        return _encoded(raw, about, raw["__key__"])
    return MixSel(key=raw["__key__"], direction=about["direction"], image=_image(raw),
                  a=_encoded(raw, about["a"], about["a"]["key"], "a."),
                  b=_encoded(raw, about["b"], about["b"]["key"], "b."))


class RecordWriter(TarSetWriter):
    """Writes encoded (or MixSel) records into tars named `pattern % k`."""

    def write(self, record: EncodedSample | MixSel) -> None:
        self.write_sample(pack(record))
        parts = (record,) if isinstance(record, EncodedSample) else (record.a, record.b)
        self.captions += sum(len(part.captions) for part in parts)


def read_records(paths: list[Path]) -> Iterator[EncodedSample | MixSel]:
    """Records from tar files, in order."""
    return map(unpack, raw_samples(paths))


def encoded_paths(encoded: Path, split: str) -> list[Path]:
    """The tar files of `split` in a finished encoded artifact (an error if the split does not exist)."""
    return split_paths(encoded, STAGE, split)


def iter_encoded(encoded: Path, split: str) -> Iterator[EncodedSample | MixSel]:
    """Every record of `split` (EncodedSample for a plain split, MixSel for a `mixsel-*` split), in shard order."""
    return read_records(encoded_paths(encoded, split))
