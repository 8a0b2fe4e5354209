"""`vltk train-gen` end to end on a tiny encoded data set: both generators, the artifact, errors, and exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vltk import artifacts
from vltk.config import load_config
from vltk.models.artifact import load_generator
from vltk.models.magvlt import MAGVLT
from vltk.pipeline import train_gen as stage
from vltk.train.checkpoint import latest_checkpoint

from tests.factories import copy_build, tensorboard_hparams, tensorboard_log, untimed_metrics
from tests.helpers import invoke, sets

TINY = ["model.width=16", "model.depth=1", "model.heads=2", "model.dropout=0.0", "model.attn_dropout=0.0",
        "train.steps=6", "train.batch_size=4", "train.log_every=1", "train.checkpoint_every=2",
        "train.ema_decay=0.9", "optim.warmup_steps=2", "data.bpe_dropout=0.1"]


@pytest.fixture(scope="module")
def encoded(tiny_vq, tmp_path_factory):
    return copy_build(tiny_vq, tmp_path_factory.mktemp("gen")) / "encoded"  # the generators are trained beside it


@pytest.fixture(scope="module")
def magvlt(encoded):
    out = encoded.parent / "magvlt"
    result = invoke("train-gen", encoded, out, "--model", "magvlt", "--cpu", *sets(*TINY))
    assert result.exit_code == 0, result.output
    return out


def test_magvlt_artifact(magvlt, encoded):
    manifest = json.loads((magvlt / "manifest.json").read_text())
    contents, enc = manifest["contents"], json.loads((encoded / "manifest.json").read_text())["contents"]
    # Sizes come from the encoded artifact, never from the user.
    assert (contents["image_vocab"], contents["text_vocab"]) == (enc["codebook_size"], enc["text_vocab_size"])
    assert (contents["image_tokens"], contents["text_tokens"]) == (enc["grid_size"] ** 2, enc["context_length"])
    assert manifest["config"]["data"]["bpe_dropout"] == 0.1
    assert artifacts.upstream(magvlt, "encoded") == encoded and manifest["inputs"]["encoded"]["path"] == "../encoded"
    weights = load_file(str(magvlt / "model.safetensors"))
    assert weights["tokens.weight"].shape == (enc["codebook_size"] + enc["text_vocab_size"], 16)
    assert contents["parameters"] == sum(v.numel() for v in weights.values())
    lines = [json.loads(line) for line in (magvlt / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all("loss" in line and "tokens_per_s" in line for line in lines)
    assert any(key.startswith("mixsel/") for key in lines[0]) and any(k.startswith("unroll/") for k in lines[0])
    with Image.open(magvlt / "loss.png") as png:
        assert png.size[0] > 100
    assert contents["train"]["steps"] == 6 and "magvlt" in contents["summary"]
    model, loaded = load_generator(magvlt)  # what sampling starts from
    assert isinstance(model, MAGVLT) and not model.training and loaded.to_dict() == contents
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_argvlt_trains_from_its_config_key(encoded, tmp_path):
    config = tmp_path / "argvlt.toml"
    config.write_text('generator = "argvlt"\n')
    out = tmp_path / "argvlt"
    result = invoke("train-gen", encoded, out, "--config", config, "--cpu", *sets(*TINY))
    assert result.exit_code == 0, result.output
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    assert contents["generator"] == "argvlt" and "length_head.weight" not in load_file(str(out / "model.safetensors"))
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert any(key.endswith("/image") for key in line) and any(key.endswith("/text") for key in line)


def test_user_errors_are_one_line(encoded, tmp_path):
    result = invoke("train-gen", encoded, tmp_path / "x", "--model", "gpt")
    assert result.exit_code == 2 and "--model must be one of magvlt, argvlt" in result.output
    result = invoke("train-gen", encoded, tmp_path / "x", "--set", "objective.task_weight=[1,1,1]")
    assert result.exit_code == 2 and "did you mean 'objective.task_weights'" in result.output
    result = invoke("train-gen", encoded.parent / "shards", tmp_path / "x")
    assert result.exit_code == 2 and "'encode' artifact is needed" in result.output
    result = invoke("train-gen", encoded, tmp_path / "x", "--set", "data.split=test")
    assert result.exit_code == 2 and "no 'test' split" in result.output


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vltk.config import load_config
    from vltk.objectives import magvlt
    from vltk.pipeline import train_gen as stage

    step_once = magvlt.MAGVLTTask.train_step
    def die_in_step_5(self, batch, step):
        if step == 5:  # mid-training: the step-4 checkpoint exists, step 5 is half done
            os.kill(os.getpid(), signal.SIGKILL)
        return step_once(self, batch, step)
    magvlt.MAGVLTTask.train_step = die_in_step_5
    cfg = load_config(stage.MAGVLTTrainConfig, None, sys.argv[3:])
    stage.run(cfg, Path(sys.argv[1]), Path(sys.argv[2]), cpu=True)
""")


def test_a_killed_run_resumes_to_bitwise_the_same_weights(magvlt, encoded, tmp_path):
    out = tmp_path / "gen"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, encoded, out, *TINY], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists() and latest_checkpoint(out.with_name("gen.partial") / "checkpoints").name.endswith("4")

    stage.run(load_config(stage.MAGVLTTrainConfig, None, TINY), encoded, out, cpu=True)
    assert json.loads((out / "manifest.json").read_text())["contents"]["train"]["resumed_from"] == 4
    resumed, straight = load_file(str(out / "model.safetensors")), load_file(str(magvlt / "model.safetensors"))
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert (out / "metrics.jsonl").read_text().count("\n") == 6


def test_loader_workers_train_to_bitwise_the_same_weights(magvlt, encoded, tmp_path):
    """Batches built ahead in 2 DataLoader processes are the batches built in the step's process: the same weights."""
    out = tmp_path / "gen"
    result = invoke("train-gen", encoded, out, "--model", "magvlt", "--cpu",
                     *sets(*TINY, "train.loader_workers=2"))
    assert result.exit_code == 0, result.output
    workers, straight = load_file(str(out / "model.safetensors")), load_file(str(magvlt / "model.safetensors"))
    assert workers.keys() == straight.keys() and all(torch.equal(workers[k], straight[k]) for k in straight)


@pytest.mark.slow
def test_a_damaged_checkpoint_falls_back_to_the_one_before_and_force_starts_over(magvlt, encoded, tmp_path):
    out = tmp_path / "gen"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, encoded, out, *TINY], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    newest = latest_checkpoint(out.with_name("gen.partial") / "checkpoints") / "modules.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as a full disk or a crash of the file system leaves it

    result = invoke("train-gen", encoded, out, "--model", "magvlt", "--cpu", *sets(*TINY))
    assert result.exit_code == 0, result.output
    assert "checkpoint step-00000004 is damaged (modules.safetensors does not match its checksum)" in result.output
    assert json.loads((out / "manifest.json").read_text())["contents"]["train"]["resumed_from"] == 2
    resumed, straight = load_file(str(out / "model.safetensors")), load_file(str(magvlt / "model.safetensors"))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)  # step 2 resumes exactly too

    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, encoded, tmp_path / "again", *TINY], capture_output=True)
    assert proc.returncode == -9
    result = invoke("train-gen", encoded, tmp_path / "again", "--model", "magvlt", "--cpu", "--force",
                     *sets(*TINY))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["contents"]["train"]["resumed_from"] == 0


def test_tensorboard_logs_the_metrics_lines_the_config_and_the_loss_plot(magvlt, encoded, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tracked"
    tracked = [*TINY, "train.log_with=tensorboard"]
    result = invoke("train-gen", encoded, out, "--model", "magvlt", "--cpu", *sum((["--set", s] for s in tracked), []))
    assert result.exit_code == 0, result.output
    assert untimed_metrics(out) == untimed_metrics(magvlt)  # tracking changes no training number
    weights, untracked = load_file(str(out / "model.safetensors")), load_file(str(magvlt / "model.safetensors"))
    assert all(torch.equal(weights[k], untracked[k]) for k in untracked)

    logs = tensorboard_log(out, "vltk-train-gen")
    with Image.open(out / "loss.png") as png:
        assert [(e.step, e.width, e.height) for e in logs.Images("loss.png")] == [(6, *png.size)]
    hparams = tensorboard_hparams(out, "vltk-train-gen")
    assert (hparams["generator"], hparams["train.steps"], hparams["model.width"]) == ("magvlt", 6, 16)
    assert hparams["train.log_with"] == '["tensorboard"]' and hparams["optim.betas"] == "[0.9, 0.95]"


def test_a_resumed_tracked_run_logs_each_step_once(encoded, tmp_path):
    pytest.importorskip("tensorboard")
    out, tracked = tmp_path / "gen", [*TINY, "train.log_with=tensorboard"]
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, encoded, out, *tracked], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # killed in step 6, after logging step 5 and checkpointing step 4
    time.sleep(1)  # TensorBoard reads event files in name order, and a name holds the second the file was made
    stage.run(load_config(stage.MAGVLTTrainConfig, None, tracked), encoded, out, cpu=True)
    # The killed run's step 5 (another "seconds") is dropped: each tag has the resumed run's lines, once.
    tensorboard_log(out, "vltk-train-gen")


def test_a_missing_tracker_package_is_one_line_before_any_work(encoded, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # wandb as if not installed, whether or not it is
    out = tmp_path / "x"
    result = invoke("train-gen", encoded, out, "--cpu", "--set", "train.log_with=wandb")
    assert result.exit_code == 2
    message = "train.log_with = wandb needs the wandb package: pip install 'vltk[wandb]'"
    assert message in " ".join(result.output.split())  # rich may wrap the line at the terminal's width
    assert not out.exists() and not out.with_name("x.partial").exists()
    result = invoke("train-gen", encoded, out, "--cpu", "--set", 'train.log_with=["tensorboard", "neptune"]')
    assert result.exit_code == 2 and "train.log_with" in result.output and "neptune" in result.output
