"""The shared training loop: the lr schedule and EMA by hand, pickle-free checkpoints, and bitwise-exact resume."""

from __future__ import annotations

import json
import math
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vltk.imagetok import CNNConfig, ImageTokenizerConfig, QuantizerConfig, build_image_tokenizer
from vltk.train import EMA, OptimConfig, TrainConfig, ema_decay_at, lr_at, make_accelerator, prepare, train, unwrap
from vltk.train.checkpoint import (
    begin_checkpoint, commit_checkpoint, damage, latest_checkpoint, load_rng, load_training_state,
    restore_checkpoint, save_rng,
    save_training_state,
)
from vltk.config import from_dict
from vltk.train.ema import ema_update_
from vltk.train.tracking import flatten
from vltk.train.loop import split_batch


def test_lr_schedule_by_hand():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    # Warm-up: (step + 1) / 4; then the cosine over the 10 steps from 4 to 14 ends at 0.1 and stays there.
    assert [lr_at(s, cfg, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg, 14) == 1.0
    assert lr_at(9, cfg, 14) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi/2) = 0
    assert lr_at(6, cfg, 14) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert lr_at(14, cfg, 14) == pytest.approx(0.1) and lr_at(30, cfg, 14) == pytest.approx(0.1)
    constant = OptimConfig(lr=2.0, warmup_steps=2, schedule="constant")
    assert [lr_at(s, constant, 10) for s in (0, 1, 2, 9)] == [1.0, 2.0, 2.0, 2.0]


def test_ema_maths_by_hand():
    average, current = [torch.tensor([1.0, 0.0])], [torch.tensor([2.0, 10.0])]
    ema_update_(average, current, 0.9)
    assert torch.allclose(average[0], torch.tensor([1.1, 1.0]))  # 0.9 * 1 + 0.1 * 2, 0.9 * 0 + 0.1 * 10
    ema_update_(average, [torch.tensor([3.0, 0.0])], 0.5)
    assert torch.allclose(average[0], torch.tensor([2.05, 0.5]))
    # The warm-up: (1 + step) / (10 + step) until it reaches the configured decay.
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(90, 0.999) == pytest.approx(0.91)
    assert ema_decay_at(100_000, 0.999) == 0.999

    model = nn.BatchNorm1d(2)  # a float weight and an integer buffer (num_batches_tracked)
    ema = EMA(model)
    with torch.no_grad():
        model.weight.fill_(3.0)
    model.num_batches_tracked.fill_(7)
    ema.update(model, 0.75)
    assert torch.allclose(ema.shadow["weight"], torch.full((2,), 0.75 * 1 + 0.25 * 3))
    assert ema.shadow["num_batches_tracked"].item() == 7  # integers are copied, not averaged


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(F.dropout(self.norm(self.conv(x)), 0.2, self.training).mean((2, 3)))


def test_checkpoint_round_trip_restores_everything_without_pickle(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        optimizer.step()
    ema = EMA(model)
    ema.update(model, 0.5)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    stage = begin_checkpoint(tmp_path, 2)
    save_rng(stage, rank=0)
    save_training_state(stage, step=2, modules={"model": model}, optimizers={"model": optimizer}, ema=ema,
                        extra={"position": 128})
    path = commit_checkpoint(stage, keep=2)
    expected = {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "ema": {k: v.clone() for k, v in ema.state_dict().items()},
        "adam": {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                 for i, s in optimizer.state_dict()["state"].items()},
        "draws": (random.random(), np.random.rand(), torch.rand(1)),
    }
    assert sorted(p.name for p in path.iterdir()) == ["checksums.json", "ema.safetensors", "modules.safetensors",
                                                      "optimizers.safetensors", "rng-0.json", "rng-0.safetensors",
                                                      "state.json"]

    # Change everything, then load with every pickle entry point disabled.
    fresh, ema_fresh = Net(), None
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=5.0)
    ema_fresh = EMA(fresh)
    random.random(), np.random.rand(), torch.rand(5)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    state = load_training_state(latest_checkpoint(tmp_path), modules={"model": fresh},
                                optimizers={"model": fresh_optimizer}, ema=ema_fresh)
    load_rng(latest_checkpoint(tmp_path), rank=0)

    assert state == {"step": 2, "extra": {"position": 128}}
    assert all(torch.equal(v, expected["weights"][k]) for k, v in fresh.state_dict().items())
    assert all(torch.equal(v, expected["ema"][k]) for k, v in ema_fresh.state_dict().items())
    loaded = fresh_optimizer.state_dict()
    assert loaded["param_groups"][0]["lr"] == 1e-2
    for i, entry in expected["adam"].items():
        for key, value in entry.items():
            assert torch.equal(loaded["state"][i][key], value) if torch.is_tensor(value) else loaded["state"][i][key] == value
    draws = (random.random(), np.random.rand(), torch.rand(1))
    assert draws[:2] == expected["draws"][:2] and torch.equal(draws[2], expected["draws"][2])


def test_only_the_newest_checkpoints_are_kept_and_unfinished_ones_ignored(tmp_path):
    model = nn.Linear(2, 2)
    for step in (1, 2, 3, 4):
        stage = begin_checkpoint(tmp_path, step)
        save_training_state(stage, step=step, modules={"model": model}, optimizers={}, ema=None, extra={})
        commit_checkpoint(stage, keep=2)
    begin_checkpoint(tmp_path, 5)  # a kill while writing step 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".step-00000005.tmp", "step-00000003", "step-00000004"]
    assert latest_checkpoint(tmp_path).name == "step-00000004"


def _checkpoints_of(model: nn.Module, root, steps) -> None:
    for step in steps:
        with torch.no_grad():
            model.weight.fill_(step)  # each checkpoint's weights say which step they are
        stage = begin_checkpoint(root, step)
        save_rng(stage, rank=0)
        save_training_state(stage, step=step, modules={"model": model}, optimizers={}, ema=None, extra={})
        commit_checkpoint(stage, keep=3)


@pytest.mark.parametrize("harm", ["truncate", "flip a byte", "delete", "random bytes", "checksums"])
def test_a_damaged_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path, harm):
    _checkpoints_of(nn.Linear(2, 2), tmp_path, (1, 2, 3))
    newest = tmp_path / "step-00000003"
    victim = newest / ("checksums.json" if harm == "checksums" else "modules.safetensors")
    data = victim.read_bytes()
    if harm == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif harm == "flip a byte":  # still a valid safetensors file: only the checksum can tell
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif harm == "delete":
        victim.unlink()
    else:
        victim.write_bytes(os.urandom(len(data)))
    assert damage(newest) is not None and damage(tmp_path / "step-00000002") is None
    said, fresh = [], nn.Linear(2, 2)
    state = restore_checkpoint(tmp_path, modules={"model": fresh}, optimizers={}, ema=None, rank=0, say=said.append)
    assert state["step"] == 2 and torch.all(fresh.weight == 2)
    assert len(said) == 1 and said[0].startswith("checkpoint step-00000003 is damaged")


def test_with_no_intact_checkpoint_a_run_starts_over_and_says_so(tmp_path):
    _checkpoints_of(nn.Linear(2, 2), tmp_path, (1,))
    (tmp_path / "step-00000001" / "state.json").write_text("{")
    said = []
    assert restore_checkpoint(tmp_path, modules={"model": nn.Linear(2, 2)}, optimizers={}, ema=None, rank=0,
                              say=said.append) is None
    assert said[-1] == "no intact checkpoint is left: starting from step 0"
    assert restore_checkpoint(tmp_path / "none", modules={}, optimizers={}, ema=None, rank=0, say=said.append) is None


def test_a_checkpoint_from_before_checksums_is_checked_by_reading_it(tmp_path):
    _checkpoints_of(nn.Linear(2, 2), tmp_path, (1,))
    old = tmp_path / "step-00000001"
    (old / "checksums.json").unlink()
    assert damage(old) is None
    (old / "rng-0.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    assert "rng-0.safetensors is unreadable" in damage(old)


def test_split_batch():
    x, y = torch.arange(8), torch.arange(8) * 2
    parts = split_batch({"x": x, "y": [y, y]}, 4)
    assert len(parts) == 4 and torch.equal(parts[1]["x"], torch.tensor([2, 3]))
    assert torch.equal(parts[3]["y"][1], torch.tensor([12, 14]))
    with pytest.raises(ValueError):
        split_batch(torch.arange(6), 4)


# --- exact resume: a tiny VQ tokenizer whose training uses every kind of state the loop must restore ----------------

TINY = ImageTokenizerConfig(
    kind="vqgan", image_size=8,
    encoder=CNNConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
                      dropout=0.1),  # dropout: the torch RNG must be restored
    quantizer=QuantizerConfig(codebook_size=16, code_dim=4, init="kmeans", dead_code_threshold=0.5),
)
CFG = TrainConfig(steps=6, batch_size=8, grad_accum=2, checkpoint_every=2, log_every=1, ema_decay=0.9, seed=5)


class Crash(Exception):
    pass


class ToyTokenizerTask:
    def __init__(self, parts, accelerator, crash_at=None):
        self.parts, self.accelerator, self.crash_at = parts, accelerator, crash_at

    def train_step(self, batch, step):
        if step == self.crash_at:
            raise Crash(step)
        noisy = batch + 0.05 * torch.randn_like(batch)  # global RNG again
        out = self.parts["model"].module(noisy)
        loss = F.l1_loss(out.recon, batch) + sum(out.loss_terms.values())
        self.accelerator.backward(loss)
        return {"loss": loss.item()}


def images(position):
    """A deterministic stream of 8 px images: global batch k is a function of its position alone."""
    while True:
        g = torch.Generator().manual_seed(position)
        yield torch.rand(CFG.batch_size, 3, 8, 8, generator=g) * 2 - 1
        position += CFG.batch_size


def run_tiny(work, crash_at=None):
    accelerator = make_accelerator(CFG, cpu=True)
    torch.manual_seed(0)
    model = build_image_tokenizer(TINY)
    parts = prepare(accelerator, {"model": (model, OptimConfig(lr=3e-3, warmup_steps=2, grad_clip=0.5))})
    result = train(ToyTokenizerTask(parts, accelerator, crash_at), images, CFG, accelerator=accelerator, work=work)
    return unwrap(accelerator, parts["model"].module), parts["model"].optimizer, result


def test_killed_and_resumed_run_matches_an_uninterrupted_one_bitwise(tmp_path):
    model, optimizer, result = run_tiny(tmp_path / "straight")
    with pytest.raises(Crash):
        run_tiny(tmp_path / "resumed", crash_at=3)  # after the step-2 checkpoint: steps 2 and 3 are redone
    assert latest_checkpoint(tmp_path / "resumed" / "checkpoints").name == "step-00000002"
    model2, optimizer2, result2 = run_tiny(tmp_path / "resumed")

    assert result2.resumed_from == 2 and result.resumed_from == 0
    assert bool(model.quantizer.initialized) and model.quantizer.codebook.abs().sum() > 0
    for (key, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), key
    assert all(torch.equal(a, result2.ema.shadow[k]) for k, a in result.ema.shadow.items())
    for i, entry in optimizer.state_dict()["state"].items():
        assert all(torch.equal(v, optimizer2.state_dict()["state"][i][k]) for k, v in entry.items())
    # The log holds every step once, and the same numbers as the uninterrupted run.
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 7))
    assert [x["loss"] for x in lines] == [x["loss"] for x in straight]
    # A finished run re-entered does nothing but load its last checkpoint.
    model3, _, result3 = run_tiny(tmp_path / "resumed")
    assert result3.resumed_from == 6 and all(torch.equal(a, b) for a, b in
                                             zip(model.state_dict().values(), model3.state_dict().values()))


def test_log_with_takes_one_tracker_or_a_list():
    # A TOML file or --set may name one tracker or a list; both spellings load as the same config (the same run).
    assert from_dict(TrainConfig, {"log_with": "tensorboard"}) == from_dict(TrainConfig, {"log_with": ["tensorboard"]})
    assert from_dict(TrainConfig, {"log_with": "tensorboard"}).log_with == ("tensorboard",)
    assert TrainConfig(log_with=("tensorboard", "mlflow")).log_with == ("tensorboard", "mlflow")
    with pytest.raises(ValueError, match="tuple of tracker names"):
        TrainConfig(log_with="tensorboard")
    with pytest.raises(ValueError, match="unknown tracker 'neptune'"):
        TrainConfig(log_with=("tensorboard", "neptune"))


def test_the_config_is_flattened_to_scalar_hyper_parameters():
    nested = {"train": {"steps": 6, "log_with": ["tensorboard"], "compile": False}, "data": {"bpe_dropout": None}}
    assert flatten(nested) == {"train.steps": 6, "train.log_with": '["tensorboard"]', "train.compile": False,
                               "data.bpe_dropout": "null"}
