"""Fuzzing the readers of artifact files: a damaged file either still reads or is one VltkError naming it, never
another exception (which the CLI would show as a traceback).

Each reader in READERS gets its tiny valid artifact (all built once for the module) with one file replaced by one of
DAMAGES: 6 seeded random byte strings, 8 truncations at seeded offsets and 8 seeded single-bit flips. 7 readers (the
tars of a shards, an encoded and a MixSel split, samples.jsonl, merges.txt, a manifest, a weights file) x 22 damages =
154 cases, plus one check per reader that the undamaged artifact reads: 161 tests.

A reader is one entry of READERS: (build: the base folder -> the artifact, the file to damage, read: artifact -> Any).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

import vltk
from vltk.data.encoded import iter_encoded
from vltk.data.shards import decode_image, iter_samples
from vltk.errors import VltkError
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.pipeline.score import read_rows
from vltk.text.bpe import BPETokenizer

from tests.factories import copy_build


def read_shards(shards: Path) -> None:
    """Every train sample with its image decoded: the tar, its JSON members and its PNGs."""
    for sample in iter_samples(shards, "train"):
        decode_image(sample)


def read_encoded(split: str) -> Callable[[Path], list]:
    return lambda encoded: list(iter_encoded(encoded, split))


def write_samples(root: Path) -> Path:
    """A samples artifact's samples.jsonl as `vltk sample` writes it for t2i (the reader needs nothing else)."""
    folder = root / "samples"
    folder.mkdir()
    rows = [{"index": i, "task": "t2i", "prompt": f"a red circle {i}", "key": f"k{i}", "references": ["a", "b"],
             "heldout": i % 2 == 0, "caption": None, "seed": i, "file": f"images/{i:05d}.png", "score": -1.5,
             "rerank": None, "candidates": 1} for i in range(4)]
    (folder / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


Reader = tuple[Callable[[Path], Path], str, Callable[[Path], Any]]
READERS: dict[str, Reader] = {
    "shards tar": (lambda root: root / "shards", "train-000-000000.tar", read_shards),
    "encoded tar": (lambda root: root / "encoded", "train-000000-000.tar", read_encoded("train")),
    "mixsel tar": (lambda root: root / "encoded", "mixsel-train-000000-000.tar", read_encoded("mixsel-train")),
    "samples.jsonl": (write_samples, "samples.jsonl", lambda samples: read_rows(samples, "t2i")),
    "merges.txt": (lambda root: root / "text-tok", "merges.txt", BPETokenizer.from_artifact),
    "manifest.json": (lambda root: root / "encoded", "manifest.json", lambda encoded: vltk.load(encoded, device="cpu")),
    "model.safetensors": (lambda root: root / "image-tok", "model.safetensors", load_image_tokenizer),
}


def _span(data: bytes) -> int:
    # Cuts and flips land before a tar's trailing zeros (end marker and padding), where they damage something.
    return max(len(data.rstrip(b"\0")), 1)


def random_bytes(seed: int) -> Callable[[bytes], bytes]:
    return lambda data: random.Random(seed).randbytes(random.Random(-seed).randrange(1, 4096))


def truncate(seed: int) -> Callable[[bytes], bytes]:
    return lambda data: data[: random.Random(seed).randrange(_span(data))]


def flip(seed: int) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        bit = random.Random(seed).randrange(8 * _span(data))
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        return bytes(flipped)

    return damage


DAMAGES = {**{f"random{s}": random_bytes(s) for s in range(6)}, **{f"cut{s}": truncate(s) for s in range(8)},
           **{f"flip{s}": flip(s) for s in range(8)}}


@pytest.fixture(scope="module")
def artifacts(tiny_vq, tmp_path_factory) -> dict[str, Path]:
    root = copy_build(tiny_vq, tmp_path_factory.mktemp("fuzz"))  # write_samples writes beside the others
    return {name: build(root) for name, (build, _, _) in READERS.items()}


def damaged_copy(artifact: Path, file: str, damage: Callable[[bytes], bytes], into: Path) -> Path:
    copy = into / artifact.name
    shutil.copytree(artifact, copy)
    original = (copy / file).read_bytes()
    damaged = damage(original)
    assert damaged != original
    (copy / file).write_bytes(damaged)
    return copy


@pytest.mark.parametrize("name", READERS)
def test_the_undamaged_artifact_reads(artifacts, name):
    _, _, read = READERS[name]
    read(artifacts[name])


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", READERS)
def test_a_damaged_file_reads_or_is_one_vltk_error_naming_it(artifacts, tmp_path, name, damage):
    _, file, read = READERS[name]
    copy = damaged_copy(artifacts[name], file, DAMAGES[damage], tmp_path)
    try:
        read(copy)
    except VltkError as err:  # any other exception fails the test with its traceback
        message = str(err)
        assert file in message and "\n" not in message, message
