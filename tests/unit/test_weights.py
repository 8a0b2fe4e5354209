"""vltk.weights: the streaming SHA-256, the check of a given file against a release's published hash (full or prefix)
on small temp files with made-up table entries, and the errors of the four loaders naming the file and its source."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
import torch

from vltk import weights
from vltk.errors import VltkError
from vltk.imagetok import losses
from vltk.imagetok.losses import build_perceptual
from vltk.imagetok.taming import load_taming_checkpoint
from vltk.metrics import fid
from vltk.metrics.clip import load_clip
from vltk.metrics.fid import load_inception
from vltk.weights import Release, require, sha256_file, verify

DATA = bytes(range(256)) * 1000  # 256 kB
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def checked(monkeypatch):
    monkeypatch.delenv(weights.SKIP_HASH, raising=False)  # tests/conftest.py sets it for the random-init weights


def release(sha256: str | None) -> Release:
    return Release("a test network", "net-0123abcd.pth", "https://example.org/net-0123abcd.pth", sha256)


def test_sha256_of_a_file_and_of_an_empty_one(tmp_path):
    file = tmp_path / "w.pth"
    file.write_bytes(DATA)
    assert sha256_file(file) == DIGEST
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256().hexdigest()


def test_a_file_matches_the_full_hash_or_a_published_prefix(tmp_path):
    file = tmp_path / "renamed.pth"  # checked whatever its name
    file.write_bytes(DATA)
    for sha256 in (DIGEST, DIGEST[:8], None):
        verify(file, release(sha256))
    with pytest.raises(VltkError) as err:
        verify(file, release("0" * 64))
    assert str(err.value) == (f"{file} is not net-0123abcd.pth (sha256 {DIGEST}, expected {'0' * 64}); get it from "
                              "https://example.org/net-0123abcd.pth")
    with pytest.raises(VltkError) as err:
        verify(file, release("0123abcd"))
    assert str(err.value) == (f"{file} is not net-0123abcd.pth (sha256 {DIGEST}, expected 0123abcd... "
                              "(only this prefix is published, in the file name)); "
                              "get it from https://example.org/net-0123abcd.pth")


def test_skipped_checks_say_so(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "net.safetensors"  # a conversion of the .pth release: another hash, not checkable
    copy.write_bytes(DATA)
    verify(copy, release("0123abcd"))
    assert "net.safetensors is not checked against net-0123abcd.pth's sha256" in capsys.readouterr().err
    file = tmp_path / "random.pth"
    file.write_bytes(DATA)
    monkeypatch.setenv(weights.SKIP_HASH, "1")
    verify(file, release("0123abcd"))
    assert "(VLTK_SKIP_WEIGHT_HASH=1, for tests)" in capsys.readouterr().err
    monkeypatch.setenv(weights.SKIP_HASH, "0")  # only "1" turns it off
    with pytest.raises(VltkError, match="is not net-0123abcd.pth"):
        verify(file, release("0123abcd"))


def test_a_missing_file_names_the_release_and_its_source(tmp_path):
    with pytest.raises(VltkError) as err:
        require(tmp_path / "nowhere.pth", release(None), "net weights")
    assert str(err.value) == (f"net weights not found: {tmp_path / 'nowhere.pth'} (a test network: net-0123abcd.pth "
                              "from https://example.org/net-0123abcd.pth)")


@pytest.mark.parametrize("load, entry", [
    (load_inception, weights.INCEPTION), (build_perceptual, weights.VGG16), (load_clip, weights.CLIP_VIT_B32),
    (load_taming_checkpoint, weights.TAMING_F16_16384),
])
def test_every_loader_names_its_file_and_source(tmp_path, load, entry):
    with pytest.raises(VltkError, match="not found") as err:
        load(tmp_path / "missing.pth")
    assert entry.name in str(err.value) and entry.source in str(err.value)
    foreign = tmp_path / "foreign.pth"  # a torch file of the wrong kind
    torch.save({"x": torch.zeros(1)}, foreign)
    if entry.sha256 is not None:  # hashed first: the published hash tells it is not the release
        with pytest.raises(VltkError, match=f"^{re.escape(str(foreign))} is not {re.escape(entry.name)} "):
            load(foreign)
    else:
        with pytest.raises(VltkError) as err:
            load(foreign)
        assert entry.name in str(err.value) and entry.source in str(err.value)


def test_vgg16_errors_name_the_lpips_layers_too(tmp_path):
    with pytest.raises(VltkError) as err:
        build_perceptual(tmp_path / "missing.pth")
    assert "vgg16-397923af.pth" in str(err.value) and "lpips" in str(err.value)


@pytest.mark.parametrize("module, name", [(fid, "INCEPTION"), (losses, "VGG16")])
def test_a_file_with_the_published_hash_goes_on_to_be_loaded(tmp_path, monkeypatch, module, name):
    file = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, file)
    load = {fid: load_inception, losses: build_perceptual}[module]
    monkeypatch.setattr(module, name, dataclasses.replace(getattr(weights, name), sha256=sha256_file(file)[:8]))
    with pytest.raises(VltkError) as err:  # the hash passes; the contents are then what fails
        load(file)
    assert "sha256" not in str(err.value) and getattr(weights, name).source in str(err.value)


def test_taming_and_clip_files_are_not_hashed():
    # Any architecture's CLIP weights and any taming checkpoint are valid inputs: no one release's hash applies.
    assert weights.CLIP_VIT_B32.sha256 is None and weights.TAMING_F16_16384.sha256 is None
