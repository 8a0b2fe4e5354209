"""Two processes (accelerate launch, gloo on the CPU) train to the same weights as one process with the same global
batch: the data is split by rank, every random draw is keyed by the sample's place in the global batch, and every mean
divides by the global count (`--multi_gpu` with `Accelerator(cpu=True)` is what all-reduces on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vltk.train import loop

from tests.dist.launching import run_vltk
from tests.factories import tensorboard_log, tiny_uvim
from tests.helpers import TINY_UVIM, sets

SETTINGS = ["model.width=16", "model.depth=1", "model.heads=2", "model.dropout=0.0", "model.attn_dropout=0.0",
            "train.steps=4", "train.batch_size=8", "train.log_every=1", "train.checkpoint_every=2",
            "train.ema_decay=0.0", "optim.warmup_steps=1", "data.bpe_dropout=0.1"]


@pytest.fixture()
def encoded(tiny_vq):
    return tiny_vq / "encoded"  # shared: read only


def train(encoded: Path, out: Path, model: str, processes: int) -> None:
    run_vltk(["train-gen", encoded, out, "--model", model, "--cpu", *sets(*SETTINGS)],
             processes)


@pytest.mark.parametrize("model", ["magvlt", "argvlt"])
def test_two_processes_match_one(encoded, tmp_path, model):
    train(encoded, tmp_path / "one", model, 1)
    train(encoded, tmp_path / "two", model, 2)
    one, two = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6, rtol=1e-5), key
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["contents"]["train"]["processes"] == 2
    lines = [(tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("one", "two")]
    assert len(lines[0]) == len(lines[1]) == 4
    for a, b in zip(*lines):  # the logged global means and gradient norms agree too
        a, b = json.loads(a), json.loads(b)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm/model"] == pytest.approx(b["grad_norm/model"], rel=1e-4) and a["grad_norm/model"] > 0


def test_two_processes_train_uvim_as_one(tmp_path):
    """UViM's stage II: the image batches are split by rank and the label autoencoder's posterior noise is keyed by
    each sample's place in the global batch, so two processes reach one process's weights."""
    tok = tiny_uvim(tmp_path, "panoptic", "vae").parent / "tok-panoptic-vae"
    settings = [*TINY_UVIM, "model.dropout=0.0", "model.attn_dropout=0.0", "train.steps=3", "train.batch_size=8",
                "train.ema_decay=0.0"]
    for processes, name in ((1, "one"), (2, "two")):
        run_vltk(["train-gen", tok, tmp_path / name, "--model", "givt-uvim", "--cpu", *sets(*settings)], processes)
    one, two = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6, rtol=1e-5), key


def test_two_processes_log_to_tensorboard_once(encoded, tmp_path):
    """Only the main process logs, and the trackers end without taking down the process group the stage still uses."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "tracked"
    run_vltk(["train-gen", encoded, out, "--cpu", *sum((["--set", s] for s in SETTINGS), []),
              "--set", "train.log_with=tensorboard"], 2)
    assert len(list((out / "trackers" / "vltk-train-gen").glob("events.out.tfevents.*"))) == 1
    tensorboard_log(out, "vltk-train-gen")


@pytest.mark.skipif(not loop.native_bf16_cpu(), reason="this CPU has no native bf16: train.mixed_precision=bf16 "
                    "runs fp32 here (vltk.train.loop.precision)")
def test_two_processes_match_one_in_bf16(encoded, tmp_path):
    """The GPU's default path on the CPU: bf16 autocast under DDP. The two processes' forward passes see half the
    batch each, so bf16's rounding differs from one process's; the fp32 master weights agree to bf16's precision
    (2^-8 relative) after 4 steps, and the logged losses to 1%."""
    for processes, name in ((1, "one"), (2, "two")):
        run_vltk(["train-gen", encoded, tmp_path / name, "--model", "magvlt", "--cpu",
                  *sets(*SETTINGS, "train.mixed_precision=bf16")], processes)
    one, two = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("one", "two"))
    assert {t.dtype for t in two.values() if t.is_floating_point()} == {torch.float32}
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-3, rtol=2 ** -8), key
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["contents"]["train"]["processes"] == 2 and manifest["contents"]["train"]["precision"] == "bf16"
    lines = [(tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("one", "two")]
    losses = [[json.loads(line)["loss"] for line in part] for part in lines]
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], rel=0.01)
