"""Two processes (accelerate launch, gloo on the CPU) train to the same weights as one process with the same global
batch: the data is split by rank, every random draw is keyed by the sample's place in the global batch, and every mean
divides by the global count (ENVIRONMENT.md: `--multi_gpu` + `Accelerator(cpu=True)` is what all-reduces on a CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1] / "smoke"))
from factories import tiny_encoded  # noqa: E402  (tests/smoke)

SETTINGS = ["model.width=16", "model.depth=1", "model.heads=2", "model.dropout=0.0", "model.attn_dropout=0.0",
            "train.steps=4", "train.batch_size=8", "train.log_every=1", "train.checkpoint_every=2",
            "train.ema_decay=0.0", "optim.warmup_steps=1", "data.bpe_dropout=0.1"]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    return tiny_encoded(tmp_path_factory.mktemp("dist"), seed=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(encoded: Path, out: Path, model: str, processes: int) -> None:
    vltk = ["-m", "vltk", "train-gen", str(encoded), str(out), "--model", model, "--cpu",
            *sum((["--set", s] for s in SETTINGS), [])]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    command = [*launch, *vltk] if processes > 1 else [sys.executable, *vltk]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


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
