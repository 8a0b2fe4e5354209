"""`vltk train-gen --model givt-*` on a tiny VAE-encoded data set: latents batches, the NLL objective against a hand
computation, big_vision's weight decay, text and class conditioning, the adapter, and the artifact."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vltk.data.encoded import iter_encoded
from vltk.data.token_batches import TokenBatches
from vltk.errors import VltkError
from vltk.models.artifact import load_generator
from vltk.models.givt import GIVT, GIVTConfig
from vltk.models.gmm import GMMConfig
from vltk.objectives.givt import GIVTObjective, GIVTTask
from vltk.train import make_accelerator, prepare
from vltk.train.loop import TrainConfig
from vltk.pipeline.train_gen import GIVTOptim

from tests.helpers import TINY_GIVT, invoke, sets

TINY = [*TINY_GIVT, "model.dropout=0.0", "model.attn_dropout=0.0", "train.steps=4", "train.log_every=1",
        "train.checkpoint_every=2"]


@pytest.fixture()
def encoded(tiny_vae):
    return tiny_vae / "encoded"  # shared: read only (every output goes to tmp_path)


def test_latent_batches_are_raster_tokens_channels_last(encoded):
    first = next(iter_encoded(encoded, "train"))
    data = TokenBatches(encoded, "train", batch_size=24, seed=0, shuffle_buffer=1)
    batch = next(data(0))
    d, h, w = first.image["mean"].shape
    assert batch["mean"].shape == batch["logvar"].shape == (batch["text"].shape[0], h * w, d)
    # Some row of the batch is `first`; token n of it is the grid's (n // w, n % w) column of channels.
    grid = torch.from_numpy(first.image["mean"].astype(np.float32))
    row = next(r for r in batch["mean"] if torch.equal(r[0], grid[:, 0, 0]))
    assert torch.equal(row[w + 2], grid[:, 1, 2]) and torch.equal(row[-1], grid[:, -1, -1])


def test_class_labels_come_from_the_meta_field(encoded):
    data = TokenBatches(encoded, "train", batch_size=8, seed=0, classes=("False", "True"), class_key="heldout")
    batch = next(data(0))
    assert batch["label"].dtype == torch.long and set(batch["label"].tolist()) <= {0, 1}
    with pytest.raises(VltkError, match="has no class"):
        next(TokenBatches(encoded, "train", batch_size=8, seed=0, classes=("a", "b"), class_key="nope")(0))
    with pytest.raises(VltkError, match="not one of the 2 classes"):
        next(TokenBatches(encoded, "train", batch_size=8, seed=0, classes=("x", "y"), class_key="heldout")(0))


def test_nll_at_init_is_the_standard_normal_density(encoded):
    """The zero-initialised head makes every token N(0, I): the loss is the mean over all tokens of
    sum_c (z_c^2 + log 2 pi) / 2, computed here by hand from the stored means (sample_latents off)."""
    accelerator = make_accelerator(TrainConfig(), cpu=True)
    data = TokenBatches(encoded, "train", batch_size=4, seed=0)
    batch = next(data(0))
    cfg = GIVTConfig(width=16, depth=1, heads=2, mlp_width=32, image_tokens=batch["mean"].shape[1],
                     text_vocab=600, text_tokens=24, gmm=GMMConfig(mixtures=2, channels=batch["mean"].shape[2]))
    parts = prepare(accelerator, {"model": (GIVT(cfg), GIVTOptim())})
    task = GIVTTask(parts, GIVTObjective(sample_latents=False), accelerator, global_batch=4, seed=0)
    metrics = task.train_step(batch, 0)
    z = batch["mean"].double()
    expected = (0.5 * (z.square() + math.log(2 * math.pi))).sum(-1).mean().item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["nll_per_dim"] == pytest.approx(expected / cfg.latent_channels, rel=1e-5)


def test_weight_decay_is_big_vision_s_on_kernels_only():
    """big_vision: p <- p - sched (lr adam + wd p) with wd = 1e-4 on kernels. With zero gradients Adam's update is 0,
    so one step multiplies each kernel by 1 - 1e-4 and leaves tables, biases and norms alone."""
    model = GIVT(GIVTConfig(width=16, depth=1, heads=2, mlp_width=32, image_tokens=4, num_classes=3,
                            gmm=GMMConfig(mixtures=2, channels=4)))
    from vltk.train.optim import build_optimizer
    optimizer = build_optimizer(model, GIVTOptim())  # lr 1e-3, AdamW wd 0.1 = 1e-4 / 1e-3
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        kernel = name.endswith("weight") and p.ndim >= 2 and not name.startswith(("labels", "text"))
        factor = 1 - 1e-4 if kernel else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=1e-6, atol=0, msg=name)
    assert "positions" in before and "labels.weight" in before  # the tables exist and were not decayed


def test_causal_text_conditioned_artifact(encoded, tmp_path):
    out = tmp_path / "givt"
    result = invoke("train-gen", encoded, out, "--model", "givt-causal", "--cpu", *sets(*TINY))
    assert result.exit_code == 0, result.output
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    enc = json.loads((encoded / "manifest.json").read_text())["contents"]
    assert contents["generator"] == "givt-causal" and contents["latent_channels"] == enc["latent_channels"]
    assert contents["model"]["gmm"]["channels"] == enc["latent_channels"]
    assert contents["model"]["text_tokens"] == enc["context_length"] and contents["model"]["variant"] == "causal"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all(line["nll_per_dim"] == pytest.approx(line["loss"] / enc["latent_channels"]) for line in lines)
    assert "NLL per dimension" in contents["summary"]
    model, _ = load_generator(out)
    assert isinstance(model, GIVT) and model.cfg.variant == "causal" and not model.training


def test_maskgit_with_classes_and_adapter(encoded, tmp_path):
    out = tmp_path / "givt-maskgit"
    result = invoke("train-gen", encoded, out, "--model", "givt-maskgit", "--cpu",
                     *sets(*TINY, "condition.text=false", "condition.num_classes=2",
                           "condition.class_names=['False','True']", "condition.class_key=heldout",
                           "model.adapter.blocks=2"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["optim"]["weight_decay"] == 0.0  # MaskGIT: no decay (big_vision configs/proj/givt)
    assert manifest["contents"]["classes"] == ["False", "True"]
    model, _ = load_generator(out)
    assert model.cfg.variant == "maskgit" and model.cfg.num_classes == 2 and model.cfg.text_tokens == 0
    assert model.adapter is not None and len(model.adapter.couplings) == 2


def test_latent_kind_errors(encoded, tiny_vq, tmp_path):
    result = invoke("train-gen", encoded, tmp_path / "x", "--model", "magvlt")
    assert result.exit_code == 2 and "holds continuous latents; MAGVLT needs VQ codes" in result.output
    vq = tiny_vq / "encoded"
    result = invoke("train-gen", vq, tmp_path / "y", "--model", "givt-causal")
    assert result.exit_code == 2 and "holds VQ codes; GIVT-CAUSAL needs continuous latents" in result.output
