"""`vltk sample` and `vltk score` with GIVT generators on a tiny VAE-encoded data set: text-to-image with DB-CFG and
self re-ranking, class-conditional MaskGIT with the adapter, the latent layout, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vltk import artifacts
from vltk.data.token_batches import TokenBatches
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.sampling.generate import to_grid

from tests.factories import copy_build
from tests.helpers import TINY_GIVT, invoke, sets


@pytest.fixture(scope="module")
def gens(tiny_vae, tmp_path_factory):
    encoded = copy_build(tiny_vae, tmp_path_factory.mktemp("givt-sample")) / "encoded"
    causal, maskgit = encoded.parent / "causal", encoded.parent / "maskgit"
    result = invoke("train-gen", encoded, causal, "--model", "givt-causal", "--cpu", *sets(*TINY_GIVT))
    assert result.exit_code == 0, result.output
    result = invoke("train-gen", encoded, maskgit, "--model", "givt-maskgit", "--cpu",
                     *sets(*TINY_GIVT, "condition.text=false", "condition.num_classes=2",
                           "condition.class_names=['False','True']", "condition.class_key=heldout",
                           "model.adapter.blocks=1"))
    assert result.exit_code == 0, result.output
    return encoded, causal, maskgit


def test_latents_go_back_to_the_grid_the_vae_decodes(gens):
    """The (B, N, d) raster tokens the trainer reads, put back on the grid, are the stored (B, d, h, w) means."""
    encoded, _, _ = gens
    batch = next(TokenBatches(encoded, "train", batch_size=4, seed=0)(0))
    side = json.loads((encoded / "manifest.json").read_text())["contents"]["grid_size"]
    grid = to_grid(batch["mean"], side)
    assert grid.shape == (4, batch["mean"].shape[2], side, side)
    assert torch.equal(grid[:, :, 1, 3], batch["mean"][:, 1 * side + 3, :])


def test_t2i_with_dbcfg_and_self_reranking(gens, tmp_path):
    encoded, causal, _ = gens
    out = tmp_path / "t2i"
    result = invoke("sample", causal, out, "--task", "t2i", "--count", "3", "--candidates", "2", "--cpu",
                     *sets("givt.cfg_weight=0.4", "batch_size=4"))
    assert result.exit_code == 0, result.output
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    assert contents["generator"] == "givt-causal" and 0 < contents["acceptance"] <= 1
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(len(line["scores"]) == 2 for line in lines)
    assert all(line["score"] == max(line["scores"]) for line in lines)  # the best candidate is kept
    side = load_image_tokenizer(artifacts.upstream(causal, "encoded", "image_tok"))[1].image_size
    with Image.open(out / lines[0]["file"]) as png:
        assert png.size == (side, side)
    scores = tmp_path / "scores"
    result = invoke("score", out, scores, "--cpu")
    assert result.exit_code == 0, result.output
    assert "judge" in json.loads((scores / "metrics.json").read_text())


def test_class_conditional_maskgit_with_prompts(gens, tmp_path):
    _, _, maskgit = gens
    out = tmp_path / "class"
    result = invoke("sample", maskgit, out, "--task", "class", "--prompt", "True", "--prompt", "0", "--cpu",
                     *sets("givt.steps=4"))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(line["prompt"], line["label"]) for line in lines] == [("True", 1), ("False", 0)]
    picture = np.asarray(Image.open(out / lines[0]["file"]))
    assert picture.shape[2] == 3 and picture.std() > 0


def test_errors(gens, tmp_path):
    _, causal, maskgit = gens
    result = invoke("sample", causal, tmp_path / "a", "--task", "class", "--cpu")
    assert result.exit_code == 2 and "was not trained on class labels" in result.output
    result = invoke("sample", maskgit, tmp_path / "b", "--task", "t2i", "--cpu")
    assert result.exit_code == 2 and "was not trained on captions" in result.output
    result = invoke("sample", causal, tmp_path / "c", "--task", "i2t", "--cpu")
    assert result.exit_code == 2 and "givt-causal cannot do i2t" in result.output
    result = invoke("sample", maskgit, tmp_path / "d", "--task", "class", "--prompt", "7", "--cpu")
    assert result.exit_code == 2 and "not one of the 2 classes" in result.output
    result = invoke("sample", causal, tmp_path / "e", "--cpu", *sets("givt.cfg_weight=0.4", "givt.beams=2"))
    assert result.exit_code == 2 and "cannot be combined with DB-CFG" in result.output


def test_python_api_text_to_image(gens):
    import vltk

    _, causal, _ = gens
    gen = vltk.load(causal, device="cpu")
    images = gen.text_to_image(["a small red circle", "a large blue square"], seed=3)
    side = gen.image_tokenizer.contents["image_size"]
    assert [image.size for image in images] == [(side, side)] * 2
    again = gen.text_to_image(["a small red circle", "a large blue square"], seed=3)
    assert np.array_equal(np.asarray(images[1]), np.asarray(again[1]))  # seeded: repeatable
