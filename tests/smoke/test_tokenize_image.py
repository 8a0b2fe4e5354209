"""`vltk tokenize image` end to end on tiny shapes shards: the artifact, its manifest, a no-op re-run, kill + resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vltk.config import load_config
from vltk.errors import VltkError
from vltk.imagetok import BetaVAE, VQGAN
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.pipeline import shard, synth
from vltk.pipeline import tokenize_image as stage
from vltk.train.checkpoint import latest_checkpoint

from tests.factories import tensorboard_log, untimed_metrics

SIZE = 32
TINY = [
    "model.encoder.channels=8", "model.encoder.channel_mult=[1, 2, 2]", "model.encoder.num_res_blocks=1",
    "model.encoder.attn_resolutions=[]", "model.encoder.z_channels=8",
    "model.quantizer.codebook_size=32", "model.quantizer.code_dim=4", "model.quantizer.l2_norm=true",
    "model.vae.latent_channels=4",
    "loss.disc_weight=0.8", "loss.disc_start=3", "loss.disc_ramp_steps=2", "loss.disc_channels=8", "loss.disc_layers=2",
    "train.steps=6", "train.batch_size=8", "train.log_every=1", "train.checkpoint_every=2", "train.ema_decay=0.9",
    "optim.warmup_steps=2", "recon_images=4",
]


def tiny(kind: str) -> stage.TokenizeImageConfig:
    return load_config(stage.TokenizeImageConfig, None, [*TINY, f"model.kind={kind}"])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenize-image")
    synth.run(synth.SynthConfig(count=40, size=SIZE, seed=2, val_fraction=0.25), root / "raw")
    shard.run(shard.ShardConfig(size=SIZE, image_format="png"), root / "raw", root / "shards", workers=1)
    return root / "shards"


@pytest.fixture(scope="module")
def vqgan(shards, tmp_path_factory):
    return stage.run(tiny("vqgan"), shards, tmp_path_factory.mktemp("vq") / "image-tok", cpu=True)


def test_vqgan_artifact(vqgan, shards):
    manifest = json.loads((vqgan / "manifest.json").read_text())
    contents = manifest["contents"]
    assert manifest["stage"] == "tokenize-image"
    assert contents["kind"] == "vqgan" and contents["image_size"] == SIZE  # from the shards, never typed
    assert (contents["downsample"], contents["grid_size"], contents["codebook_size"]) == (4, 8, 32)
    assert contents["normalization"] == "[-1, 1]" and contents["perceptual"] == "off"
    assert contents["model"]["encoder"]["channel_mult"] == [1, 2, 2] and contents["model"]["image_size"] == SIZE
    assert 0 < contents["codebook_usage"] <= 1 and 1 <= contents["perplexity"] <= 32 and contents["psnr"] > 0
    judge = contents["judge"]
    val = json.loads((shards / "manifest.json").read_text())["contents"]["splits"]["val"]
    assert judge["originals"]["captions"] == val["captions"] == judge["reconstructions"]["captions"]
    assert judge["originals"]["whole"] > 0.9  # the judge reads real renders
    assert {"shape", "color", "size", "position"} <= set(judge["reconstructions"])
    assert judge["ratio"] == pytest.approx(judge["reconstructions"]["whole"] / judge["originals"]["whole"], abs=1e-3)

    # recon.png: 4 originals above their 4 reconstructions, enlarged x2 with 2 px borders.
    with Image.open(vqgan / "recon.png") as grid:
        assert grid.size == (2 + 4 * (64 + 2), 2 + 2 * (64 + 2))

    # The published weights are the EMA weights, and they load into the model the manifest describes.
    model, loaded = load_image_tokenizer(vqgan)
    assert isinstance(model, VQGAN) and not model.training and loaded.to_dict() == contents
    ema = load_file(str(latest_checkpoint(vqgan / "checkpoints") / "ema.safetensors"))
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    codes = model.encode(torch.zeros(2, 3, SIZE, SIZE))
    assert codes.shape == (2, 8, 8) and int(codes.max()) < 32

    # The log: the discriminator and the adaptive weight appear from disc_start (step index 3, logged as step 4).
    lines = [json.loads(x) for x in (vqgan / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert all("d_loss" not in x for x in lines[:3]) and all("d_loss" in x and "logits_real" in x for x in lines[3:])
    assert "d_weight" not in lines[3] and lines[4]["gan_factor"] == 0.5 and lines[4]["d_weight"] > 0  # the ramp
    assert all({"psnr", "usage", "perplexity", "lr/model"} <= set(x) for x in lines)


def test_rerun_is_a_noop_and_another_config_is_refused(vqgan, shards):
    before = (vqgan / "manifest.json").read_bytes()
    assert stage.run(tiny("vqgan"), shards, vqgan, cpu=True) == vqgan
    assert (vqgan / "manifest.json").read_bytes() == before
    with pytest.raises(VltkError, match="different run"):
        stage.run(tiny("vae"), shards, vqgan, cpu=True)


def test_tensorboard_logs_the_metrics_lines_and_the_reconstructions(vqgan, shards, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = load_config(stage.TokenizeImageConfig, None, [*TINY, "model.kind=vqgan", "train.log_with=tensorboard"])
    out = stage.run(cfg, shards, tmp_path / "tracked", cpu=True)
    assert untimed_metrics(out) == untimed_metrics(vqgan)  # tracking changes no training number
    logs = tensorboard_log(out, "vltk-tokenize-image")
    assert {"d_loss", "psnr", "lr/model", "lr/disc"} <= set(logs.Tags()["scalars"])
    with Image.open(out / "recon.png") as grid:
        assert [(e.step, e.width, e.height) for e in logs.Images("recon.png")] == [(6, *grid.size)]


def test_vae_artifact(shards, tmp_path):
    out = stage.run(tiny("vae"), shards, tmp_path / "vae", cpu=True)
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    assert contents["kind"] == "vae" and contents["latent_channels"] == 4 and contents["grid_size"] == 8
    assert "codebook_size" not in contents and "codebook_usage" not in contents and "judge" in contents
    model, _ = load_image_tokenizer(out)
    mean, logvar = model.encode(torch.zeros(2, 3, SIZE, SIZE))
    assert isinstance(model, BetaVAE) and mean.shape == logvar.shape == (2, 4, 8, 8)


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import vltk.train.loop as loop
    from vltk.config import load_config
    from vltk.pipeline import tokenize_image as stage

    commit = loop.commit_checkpoint
    def commit_then_die(staging, keep):
        path = commit(staging, keep)
        if path.name == "step-00000004":
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    loop.commit_checkpoint = commit_then_die
    cfg = load_config(stage.TokenizeImageConfig, None, sys.argv[3:])
    stage.run(cfg, Path(sys.argv[1]), Path(sys.argv[2]), cpu=True)
""")


def test_a_killed_run_resumes_to_bitwise_the_same_weights(vqgan, shards, tmp_path):
    out = tmp_path / "image-tok"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, shards, out, *TINY, "model.kind=vqgan"],
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # SIGKILLed right after writing the step-4 checkpoint
    assert not out.exists() and latest_checkpoint(out.with_name("image-tok.partial") / "checkpoints").name.endswith("4")

    stage.run(tiny("vqgan"), shards, out, cpu=True)
    contents = json.loads((out / "manifest.json").read_text())["contents"]
    assert contents["train"]["resumed_from"] == 4
    resumed, straight = load_file(str(out / "model.safetensors")), load_file(str(vqgan / "model.safetensors"))
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert (out / "metrics.jsonl").read_text().count("\n") == 6
