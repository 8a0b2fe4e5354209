"""A damaged tar of a shards or encoded artifact, or a damaged member in one, is one VltkError that names the tar (and
the member) and says what is wrong, wherever the tars are read: the sample readers, the training streams, the CLI."""

from __future__ import annotations

import io
import shutil
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from vltk.data.encoded import iter_encoded
from vltk.data.loader import ImageBatches
from vltk.data.shards import decode_image, iter_samples
from vltk.data.token_batches import TokenBatches
from vltk.errors import VltkError

from tests.helpers import invoke, one_line_error

SHARDS_TAR, ENCODED_TAR, MIXSEL_TAR = "train-000-000000.tar", "train-000000-000.tar", "mixsel-train-000000-000.tar"


@pytest.fixture()
def root(tiny_vq, tmp_path) -> Path:
    """A fresh copy of the tiny artifacts, for one test to damage."""
    for name in ("shards", "encoded", "image-tok", "text-tok"):
        shutil.copytree(tiny_vq / name, tmp_path / name)
    return tmp_path


def read_shards(root: Path) -> int:
    return sum(1 for sample in iter_samples(root / "shards", "train") if decode_image(sample))


def read_encoded(root: Path) -> int:
    return len(list(iter_encoded(root / "encoded", "train")))


def read_mixsel(root: Path) -> int:
    return len(list(iter_encoded(root / "encoded", "mixsel-train")))


READERS = {"shards": (read_shards, SHARDS_TAR), "encoded": (read_encoded, ENCODED_TAR),
           "mixsel": (read_mixsel, MIXSEL_TAR)}


def members(tar: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tar) as f:
        return [(info, f.extractfile(info).read()) for info in f.getmembers()]


def rewrite(tar: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """The tar rewritten whole (a valid tar) with each member's bytes `change(name, data)`; None drops the member."""
    kept = [(info, change(info.name, data)) for info, data in members(tar)]
    with tarfile.open(tar, "w") as f:
        for info, data in kept:
            if data is not None:
                info.size = len(data)
                f.addfile(info, io.BytesIO(data))


def first(suffix: str, replacement: bytes | None) -> Callable[[str, bytes], bytes | None]:
    """A `rewrite` change that replaces the first member whose extension (all after the key's first dot) is `suffix`:
    ".png" is an image, not the "panoptic.png" label beside it."""
    done: list[str] = []

    def change(name: str, data: bytes) -> bytes | None:
        if "." + name.split(".", 1)[-1] == suffix and not done:
            done.append(name)
            return replacement
        return data

    return change


def damage_header(tar: Path) -> None:
    """Flip one bit in the name of the fourth member's header (its checksum no longer matches)."""
    offset = members(tar)[3][0].offset
    data = bytearray(tar.read_bytes())
    data[offset + 3] ^= 0x10
    tar.write_bytes(bytes(data))


WHOLE_FILE = {
    "missing": (lambda tar: tar.unlink(), "is missing"),
    "empty": (lambda tar: tar.write_bytes(b""), "is not a tar file"),
    "random bytes": (lambda tar: tar.write_bytes(np.random.default_rng(0).bytes(5000)), "is not a tar file"),
    "truncated": (lambda tar: tar.write_bytes(tar.read_bytes()[:3000]), "is truncated"),
    "cut at a header": (lambda tar: tar.write_bytes(tar.read_bytes()[:members(tar)[3][0].offset + 100]),
                        "is truncated"),
    # tarfile itself stops at a bad header after the first without a word: the samples after it were silently lost.
    "damaged header": (damage_header, "has a damaged header"),
}


@pytest.mark.parametrize("damage", WHOLE_FILE)
@pytest.mark.parametrize("reader", READERS)
def test_a_damaged_tar_is_one_error_saying_what(root, reader, damage):
    read, name = READERS[reader]
    tar = root / ("shards" if reader == "shards" else "encoded") / name
    mutate, words = WHOLE_FILE[damage]
    mutate(tar)
    with pytest.raises(VltkError) as err:
        read(root)
    assert str(err.value).startswith(f"{tar} {words}") and "rebuild" in str(err.value), err.value


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """The chunks of a width x height PNG (valid checksums, no pixel data): PIL refuses it as a decompression bomb."""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(
        b"IDAT", b"")


MEMBERS = {
    "garbage png": ("shards", ".png", np.random.default_rng(1).bytes(300), ".png does not decode (Unidentified"),
    "huge png": ("shards", ".png", png_claiming(100_000, 100_000), ".png does not decode (DecompressionBomb"),
    "garbage json": ("shards", ".json", b'{"captions": ["a red', ".json does not decode (JSONDecodeError"),
    "captions not a list": ("shards", ".json", b'{"captions": "a red circle"}', "field 'captions' is not a list"),
    "no image": ("shards", ".png", None, "has no image member"),
    "garbage npy": ("encoded", ".codes.npy", np.random.default_rng(2).bytes(300), ".codes.npy does not decode"),
    "cut npy": ("encoded", ".text.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<i4', 'fortran_order'",
                ".text.npy does not decode"),
    "no text": ("encoded", ".text.npy", None, "has no text.npy member"),
    "mixsel direction": ("mixsel", ".json", b'{"direction": "diagonal", "a": {}, "b": {}}', "'direction'"),
    "mixsel part": ("mixsel", ".json", b'{"direction": "vertical", "a": {"captions": []}, "b": {}}', "'a' has no 'key'"),
}


@pytest.mark.parametrize("case", MEMBERS)
def test_a_damaged_member_is_one_error_naming_tar_and_member(root, case):
    reader, suffix, replacement, words = MEMBERS[case]
    read, name = READERS[reader]
    tar = root / ("shards" if reader == "shards" else "encoded") / name
    rewrite(tar, first(suffix, replacement))
    with pytest.raises(VltkError) as err:
        read(root)
    message = str(err.value)
    assert message.startswith(f"{tar}: ") and words in message and "\n" not in message, message


def test_an_undamaged_rewrite_reads(root):
    """The test's own tar rewriting keeps a tar readable (so the errors above come from the damage alone)."""
    before = read_shards(root), read_encoded(root), read_mixsel(root)
    for tar in (root / "shards" / SHARDS_TAR, root / "encoded" / ENCODED_TAR, root / "encoded" / MIXSEL_TAR):
        rewrite(tar, lambda name, data: data)
    assert (read_shards(root), read_encoded(root), read_mixsel(root)) == before


def test_streamed_training_batches_name_the_member_they_fail_on(root):
    """Streamed splits decode a sample only when its batch is built: the error still names the tar and the member."""
    rewrite(root / "shards" / SHARDS_TAR, first(".png", b"not a png"))
    rewrite(root / "encoded" / ENCODED_TAR, first(".codes.npy", b"not an npy"))
    images = ImageBatches(root / "shards", "train", batch_size=2, seed=0, in_memory_max=0)
    tokens = TokenBatches(root / "encoded", "train", batch_size=2, seed=0, in_memory_max=0)
    for batches, tar, member in ((images, SHARDS_TAR, ".png"), (tokens, ENCODED_TAR, ".codes.npy")):
        with pytest.raises(VltkError, match=rf"{tar}: member \S+{member} does not decode"):
            for _ in zip(range(100), batches()):  # a few epochs: every sample is loaded
                pass


def test_the_cli_gives_one_line_naming_the_tar(root):
    (root / "encoded" / ENCODED_TAR).write_bytes((root / "encoded" / ENCODED_TAR).read_bytes()[:2000])
    line = one_line_error(invoke("decode", root / "encoded", root / "decoded", "--image-tok", root / "image-tok",
                                 "--split", "train"))
    assert ENCODED_TAR in line and "is truncated" in line
    (root / "shards" / SHARDS_TAR).unlink()
    line = one_line_error(invoke("tokenize", "text", root / "shards", root / "text-tok-2", "--vocab-size", 600))
    assert SHARDS_TAR in line and "is missing" in line
