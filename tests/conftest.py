"""Shared fixtures of vltk's tests. Helpers that are not fixtures are in tests/helpers.py (the CLI in this process,
`--set` lists, the tiny generator's overrides), artifact builders in tests/factories.py.

The tiny build folders below are built once per test process (with pytest-xdist: once per worker, and only if one of
its tests asks for them) and are shared: a test only reads them. One that writes beside an artifact (trains, samples,
damages a file) first copies the folder with factories.copy_build into its own tmp_path, e.g.

    @pytest.fixture(scope="module")
    def root(tiny_magvlt, tmp_path_factory):
        return copy_build(tiny_magvlt, tmp_path_factory.mktemp("mine"))
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The builders (torch, torch-fidelity, the stages) are imported in the fixtures that use them: a run of a few light test
# files does not pay seconds of imports for artifacts it never builds.


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
    train_gen.run(load_config(train_gen.MAGVLTRun, None, TINY_GEN), root / "encoded", root / "gen", cpu=True)
    return root
