"""bf16 autocast on the CPU: every training stage (image tokenizers, generators) runs under `train.mixed_precision =
"bf16"`, really in bf16, with finite losses close to fp32's, and publishes fp32 weights; "auto" stays fp32 on a CPU.

Tolerance: from the same initial weights on the same batches, each of the 3 steps' loss is within 3% (relative) of
fp32's (bf16 keeps 8 bits of mantissa: a matmul's relative error is ~2^-8 = 0.4%; a few layers deep and three steps
of drift stay well under 3%), and some step's loss differs from fp32's (else autocast did not run; GIVT's first loss
cannot differ: its zero-initialised head gives N(0, I) whatever the trunk computes).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from factories import tiny_encoded
from vltk.config import load_config
from vltk.pipeline import tokenize_image, train_gen
from vltk.train import TrainConfig, loop, make_accelerator

TOKENIZER = ["model.encoder.channels=8", "model.encoder.channel_mult=[1, 2]", "model.encoder.num_res_blocks=1",
             "model.encoder.attn_resolutions=[]", "model.encoder.z_channels=8", "model.quantizer.codebook_size=32",
             "model.quantizer.code_dim=4", "model.vae.latent_channels=4", "loss.disc_weight=0.8", "loss.disc_start=1",
             "loss.disc_channels=8", "loss.disc_layers=2", "recon_images=2", "eval_batch_size=8"]
GENERATOR = ["model.width=32", "model.depth=2", "model.heads=2", "model.dropout=0.0", "model.attn_dropout=0.0"]
GIVT = ["model.mlp_width=64", "model.gmm.mixtures=2"]
TRAIN = ["train.steps=3", "train.batch_size=8", "train.log_every=1", "train.checkpoint_every=3",
         "optim.warmup_steps=1"]
RUNS = {
    "vqgan": (tokenize_image.TokenizeImageConfig, [*TOKENIZER, "model.kind=vqgan"]),
    "vae": (tokenize_image.TokenizeImageConfig, [*TOKENIZER, "model.kind=vae"]),
    "magvlt": (train_gen.MAGVLTRun, [*GENERATOR, "objective.cond_dropout=0.2"]),
    "argvlt": (train_gen.ARGVLTRun, GENERATOR),
    "givt-causal": (train_gen.GIVTCausalRun, [*GENERATOR, *GIVT]),
    "givt-maskgit": (train_gen.GIVTMaskGITRun, [*GENERATOR, *GIVT]),
}


@pytest.fixture(autouse=True)
def native_bf16(monkeypatch):
    """Autocast runs on any CPU here (emulated where the CPU lacks bf16: slow, but the models are tiny)."""
    monkeypatch.setattr(loop, "native_bf16_cpu", lambda: True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    return {"vq": tiny_encoded(root / "vq"), "vae": tiny_encoded(root / "vae", kind="vae"), "root": root}


def train(name: str, precision: str, data) -> tuple[list[dict], dict[str, torch.Tensor]]:
    cls, sets = RUNS[name]
    cfg = load_config(cls, None, [*sets, *TRAIN, f"train.mixed_precision={precision}"])
    out = data["root"] / f"{name}-{precision}"
    if cls is tokenize_image.TokenizeImageConfig:
        tokenize_image.run(cfg, data["vq"].parent / "shards", out, cpu=True)
    else:
        train_gen.run(cfg, data["vae" if name.startswith("givt") else "vq"], out, cpu=True)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((out / "manifest.json").read_text())["contents"]["train"]["precision"] == precision
    return lines, load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("name", RUNS)
def test_bf16_trains_every_stage_close_to_fp32(name, data):
    (fp32, _), (bf16, weights) = train(name, "no", data), train(name, "bf16", data)
    losses = [line["loss"] for line in bf16]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    reference = [line["loss"] for line in fp32]
    assert losses != reference  # autocast ran
    assert losses == pytest.approx(reference, rel=0.03)
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}  # fp32 master weights


def test_auto_is_bf16_on_a_gpu_only_and_bf16_needs_a_native_cpu(monkeypatch, capsys):
    assert [loop.precision(p, on_cpu=False) for p in ("auto", "bf16", "no")] == ["bf16", "bf16", "no"]
    assert make_accelerator(TrainConfig(mixed_precision="auto"), cpu=True).mixed_precision == "no"
    assert make_accelerator(TrainConfig(mixed_precision="bf16"), cpu=True).mixed_precision == "bf16"
    assert make_accelerator(TrainConfig(mixed_precision="no"), cpu=True).mixed_precision == "no"
    monkeypatch.setattr(loop, "native_bf16_cpu", lambda: False)  # emulated bf16 would only be slower
    assert make_accelerator(TrainConfig(mixed_precision="bf16"), cpu=True).mixed_precision == "no"
    assert "no native bf16" in capsys.readouterr().err
