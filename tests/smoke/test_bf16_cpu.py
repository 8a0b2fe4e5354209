"""bf16 autocast on the CPU, the GPU's default path exercised where a CPU stands in: every training stage (image
tokenizers, generators) runs under `train.mixed_precision = "bf16"`, really in bf16, with finite losses close to
fp32's, and publishes fp32 weights ("auto" stays fp32 on a CPU); encode, every sampling task of every generator and
score run under bf16 too, with the dtypes that matter checked (KV caches bf16, the GMM and the samplers' math float32).

Tolerance: from the same initial weights on the same batches, each of the 3 steps' loss is within 3% (relative) of
fp32's (bf16 keeps 8 bits of mantissa: a matmul's relative error is ~2^-8 = 0.4%; a few layers deep and three steps
of drift stay well under 3%), and some step's loss differs from fp32's (else autocast did not run; GIVT's first loss
cannot differ: its zero-initialised head gives N(0, I) whatever the trunk computes).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vltk
from vltk.config import load_config
from vltk.data.encoded import iter_encoded
from vltk.models.layers import KVCache
from vltk.pipeline import encode, sample, score, tokenize_image, train_gen
from vltk.sampling import givt as gv
from vltk.sampling import rerank
from vltk.sampling.magvlt import window_lengths
from vltk.train import TrainConfig, loop, make_accelerator

from tests.factories import copy_build
from tests.helpers import needs_java

TOKENIZER = ["model.encoder.channels=8", "model.encoder.channel_mult=[1, 2]", "model.encoder.num_res_blocks=1",
             "model.encoder.attn_resolutions=[]", "model.encoder.z_channels=8", "model.quantizer.codebook_size=32",
             "model.quantizer.code_dim=4", "model.vae.latent_channels=4", "loss.disc_weight=0.8", "loss.disc_start=1",
             "loss.disc_channels=8", "loss.disc_layers=2", "recon_images=2", "eval_batch_size=8"]
GENERATOR = ["model.width=32", "model.depth=2", "model.heads=2", "model.dropout=0.0", "model.attn_dropout=0.0"]
GIVT = ["model.mlp_width=64", "model.gmm.mixtures=2"]
TRAIN = ["train.steps=3", "train.batch_size=8", "train.log_every=1", "train.checkpoint_every=3",
         "optim.warmup_steps=1"]
CONFIGS = {
    "vqgan": (tokenize_image.TokenizeImageConfig, [*TOKENIZER, "model.kind=vqgan"]),
    "vae": (tokenize_image.TokenizeImageConfig, [*TOKENIZER, "model.kind=vae"]),
    "magvlt": (train_gen.MAGVLTTrainConfig, [*GENERATOR, "objective.cond_dropout=0.2"]),
    "argvlt": (train_gen.ARGVLTTrainConfig, GENERATOR),
    "givt-causal": (train_gen.GIVTCausalTrainConfig, [*GENERATOR, *GIVT]),
    "givt-maskgit": (train_gen.GIVTMaskGITTrainConfig, [*GENERATOR, *GIVT]),
}


@pytest.fixture(autouse=True)
def native_bf16(monkeypatch):
    """Autocast runs on any CPU here (emulated where the CPU lacks bf16: slow, but the models are tiny)."""
    monkeypatch.setattr(loop, "native_bf16_cpu", lambda: True)


@pytest.fixture(scope="module")
def data(tiny_vq, tiny_vae, tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")  # the runs write beside the encoded data: copies
    return {"vq": copy_build(tiny_vq, root / "vq") / "encoded", "vae": copy_build(tiny_vae, root / "vae") / "encoded",
            "root": root}


def train(name: str, precision: str, data) -> tuple[list[dict], dict[str, torch.Tensor]]:
    cls, sets = CONFIGS[name]
    cfg = load_config(cls, None, [*sets, *TRAIN, f"train.mixed_precision={precision}"])
    out = data["root"] / f"{name}-{precision}"
    if cls is tokenize_image.TokenizeImageConfig:
        tokenize_image.run(cfg, data["vq"].parent / "shards", out, cpu=True)
    else:
        train_gen.run(cfg, data["vae" if name.startswith("givt") else "vq"], out, cpu=True)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((out / "manifest.json").read_text())["contents"]["train"]["precision"] == precision
    return lines, load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("name", CONFIGS)
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


SAMPLED = [pytest.param(name, task, marks=needs_java) if task in ("i2t", "infill") else (name, task)  # captions scored
           for name, task in [("magvlt", t) for t in ("t2i", "i2t", "it2it", "inpaint", "infill")]
           + [("argvlt", t) for t in ("t2i", "i2t", "inpaint")] + [("givt-causal", "t2i"), ("givt-maskgit", "t2i")]]


@pytest.mark.parametrize("name,task", SAMPLED)
def test_bf16_samples_every_task_and_scores_them(name, task, data, monkeypatch):
    """Every sampling task of every generator runs under bf16 autocast (sample.mixed_precision = "bf16"): the KV caches
    hold bf16, the GMM and the draws stay float32, and the samples score."""
    train(name, "bf16", data)
    caches, gmms = [], []  # the dtypes of every KV cache made and of every GMM drawn from
    make_cache = KVCache.__init__

    def new_cache(self, *args, **kwargs):
        make_cache(self, *args, **kwargs)
        caches.append(self.keys.dtype)

    make_gmm = gv._gmm

    def new_gmm(*args):
        gmm = make_gmm(*args)
        gmms.append((gmm.logits.dtype, gmm.means.dtype, gmm.scales.dtype))
        return gmm

    monkeypatch.setattr(KVCache, "__init__", new_cache)
    monkeypatch.setattr(gv, "_gmm", new_gmm)
    guidance = {"magvlt": "magvlt.guidance=1.0", "argvlt": "argvlt.guidance=1.0", "givt-causal": "givt.cfg_weight=0.2",
                "givt-maskgit": "givt.cfg_weight=0.2"}[name] if task in ("t2i", "i2t") else "seed=1"
    cfg = load_config(sample.SampleConfig, None, [f"task={task}", "count=3", "batch_size=3", "mixed_precision=bf16",
                                                  guidance, "givt.steps=4"])
    out = sample.run(cfg, data["root"] / f"{name}-bf16", data["root"] / f"samples-{name}-{task}", cpu=True)
    assert json.loads((out / "manifest.json").read_text())["contents"]["precision"] == "bf16"
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(row["score"]) for row in rows)
    if name in ("argvlt", "givt-causal"):
        assert caches and set(caches) == {torch.bfloat16}
    if name.startswith("givt"):
        assert gmms and set(gmms) == {(torch.float32,) * 3}
    metrics = score.run(score.ScoreConfig(meteor=False), out, data["root"] / f"scores-{name}-{task}", cpu=True)
    assert json.loads((metrics / "metrics.json").read_text())["judge"]["all"]["captions"] == 3


@pytest.mark.parametrize("name", ["magvlt", "argvlt", "givt-causal"])
def test_bf16_scores_a_sample_as_fp32_does(name, data):
    """What the samplers and self re-ranking compute, on the same val records, under autocast and in fp32: the mean
    log p per caption token (MAGVLT, ARGVLT) within 3% (one pass: bf16's ~0.4% per matmul), GIVT's per-token PMI (a
    difference of two log-densities, near 0 for an untrained model) within 0.01 nats."""
    train(name, "bf16", data)
    gen = vltk.load(data["root"] / f"{name}-bf16", device="cpu")
    records = list(itertools.islice(iter_encoded(gen.encoded, "val"), 3))
    text = torch.from_numpy(np.stack([r.text[0] for r in records]).astype(np.int64))  # (B, C)
    model, eos = gen.model, gen.text_tokenizer.eos_id
    if name.startswith("givt"):
        means = torch.from_numpy(np.stack([r.image["mean"] for r in records]).astype(np.float32))  # (B, d, h, w)
        latents = means.flatten(2).transpose(1, 2)  # (B, L, d) raster tokens

        def score_of() -> torch.Tensor:
            return rerank.givt_scores(model, latents, text=text, text_len=window_lengths(text, eos))
    else:
        codes = torch.from_numpy(np.stack([r.image["codes"].reshape(-1) for r in records]).astype(np.int64))

        def score_of() -> torch.Tensor:
            return rerank.self_scores(model, codes, text, eos_id=eos)
    with torch.no_grad():
        fp32 = score_of()
        with torch.autocast("cpu", torch.bfloat16):
            bf16 = score_of()
    assert fp32.dtype == bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)
    tolerance = {"abs": 0.01} if name.startswith("givt") else {"rel": 0.03}
    assert bf16.tolist() == pytest.approx(fp32.tolist(), **tolerance)


@pytest.mark.parametrize("kind", ["vq", "vae"])
def test_bf16_encodes_close_to_fp32(kind, data):
    """`vltk encode` under bf16 autocast: VQ codes mostly the fp32 ones (a code changes only where two are within
    bf16's rounding of each other: at least 80% equal with this random-init tokenizer), VAE posteriors different (so
    autocast ran) but within 5% of their largest magnitude, stored in the same dtypes."""
    root = data[kind].parent
    out = {}
    for precision in ("no", "bf16"):
        cfg = encode.EncodeConfig(batch_size=4, mixsel_pairs=0, mixed_precision=precision)
        out[precision] = encode.run(cfg, root / "shards", root / "image-tok", root / "text-tok",
                                    root / f"encoded-{precision}", cpu=True)
    fp32, bf16 = (list(iter_encoded(out[p], "train")) for p in ("no", "bf16"))
    field = "codes" if kind == "vq" else "mean"
    a, b = (np.stack([r.image[field] for r in records]) for records in (fp32, bf16))
    assert a.dtype == b.dtype and a.shape == b.shape
    if kind == "vq":
        assert (a == b).mean() >= 0.8  # 98% here
    else:
        assert not np.array_equal(a, b)
        assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() <= 0.05 * np.abs(a.astype(np.float32)).max()
