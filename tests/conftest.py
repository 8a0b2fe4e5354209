"""Shared fixtures of vltk's tests. Helpers that are not fixtures are in tests/helpers.py (the CLI in this process,
`--set` lists, the tiny generator's overrides, the Java skip), artifact builders in tests/factories.py.

Layout: tests/unit (one module or function at a time, on hand-made or tiny inputs), tests/integration (whole stages
through the Python API; pycocoevalcap's Java), tests/smoke (the CLI end to end, as a user runs it: stages, make, the
examples), tests/dist (`accelerate launch` with several CPU processes).

Markers (registered in pyproject.toml, --strict-markers): `slow` for a test of more than ~5 s on 2 CPU cores (mark it
with @pytest.mark.slow), `dist` for every test under tests/dist (marked here, with `slow` too). The fast inner loop is

    OMP_NUM_THREADS=1 python -m pytest -n 2 --dist worksteal -m "not slow"

and `make test` runs every test.

The weights files the tests load (Inception, VGG16, ...) are random-init stand-ins shaped like the releases, which no
published SHA-256 matches: VLTK_SKIP_WEIGHT_HASH=1 turns that check off (vltk.weights). It is set here, at import, so
that the stages' subprocesses inherit it; tests/unit/test_weights.py unsets it to test the check itself.

The tiny build folders below are built once per test process (with pytest-xdist: once per worker, and only if one of
its tests asks for them) and are shared: a test only reads them. One that writes beside an artifact (trains, samples,
damages a file) first copies the folder with factories.copy_build into its own tmp_path, e.g.

    @pytest.fixture(scope="module")
    def root(tiny_magvlt, tmp_path_factory):
        return copy_build(tiny_magvlt, tmp_path_factory.mktemp("mine"))
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The builders (torch, torch-fidelity, the stages) are imported in the fixtures that use them: a run of a few light test
# files does not pay seconds of imports for artifacts it never builds.

os.environ["VLTK_SKIP_WEIGHT_HASH"] = "1"
DIST = Path(__file__).parent / "dist"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/dist is `dist` and `slow`, a new file there included."""
    for item in items:
        if item.path.is_relative_to(DIST):
            item.add_marker(pytest.mark.dist)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_vq(tmp_path_factory) -> Path:
    """A build folder of factories.tiny_encoded: raw/ (24 synth scenes of 16 px, seed 2: 3 of them in val), shards/,
    text-tok/ (600-token BPE, context 24), image-tok/ (a random VQ-GAN, 64 codes, 8x8 grid) and encoded/ (VQ codes
    with MixSel pairs)."""
    from tests.factories import tiny_encoded

    root = tmp_path_factory.mktemp("tiny-vq")
    tiny_encoded(root)
    return root


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    """tiny_vq's chain with a random beta-VAE: image-tok/ is a VAE and encoded/ holds 4-channel latents."""
    from tests.factories import tiny_encoded

    root = tmp_path_factory.mktemp("tiny-vae")
    tiny_encoded(root, kind="vae")
    return root


@pytest.fixture(scope="session")
def tiny_magvlt(tiny_vq, tmp_path_factory) -> Path:
    """tiny_vq's chain and gen/: a MAGVLT trained 2 steps with helpers.TINY_GEN."""
    from vltk.config import load_config
    from vltk.pipeline import train_gen

    from tests.factories import copy_build
    from tests.helpers import TINY_GEN

    root = copy_build(tiny_vq, tmp_path_factory.mktemp("tiny-magvlt"))
    train_gen.run(load_config(train_gen.MAGVLTTrainConfig, None, TINY_GEN), root / "encoded", root / "gen", cpu=True)
    return root
