"""Tiny artifacts the smoke and dist tests build on: a random-init image tokenizer, a whole encoded data set and
random-init Inception weights in the released file's format; an artifact's files, to compare two runs; and a tracked
run's TensorBoard log, checked against its metrics.jsonl."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from vltk import artifacts
from vltk.config import config_to_dict
from vltk.imagetok import CNNConfig, ImageTokenizerConfig, QuantizerConfig, VAEConfig, build_image_tokenizer
from vltk.pipeline import encode, shard, synth, tokenize_text
from vltk.records import ImageTokenizerContents, Stage


def make_image_tok(out: Path, kind: str, size: int = 16):
    """A random-init tokenizer artifact in the layout `vltk tokenize image` writes."""
    cfg = ImageTokenizerConfig(
        kind=kind, image_size=size,
        encoder=CNNConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8),
        quantizer=QuantizerConfig(codebook_size=64, code_dim=4), vae=VAEConfig(latent_channels=4),
    )
    torch.manual_seed(0)
    model = build_image_tokenizer(cfg)
    job = artifacts.begin(out, stage=Stage.TOKENIZE_IMAGE, config=cfg, inputs={})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, job.work / "model.safetensors")
    sizes = {"codebook_size": 64} if kind == "vqgan" else {"latent_channels": 4}
    job.publish(ImageTokenizerContents(
        kind=kind, image_size=size, grid_size=cfg.grid_size, model=config_to_dict(cfg), **sizes,
        extra={"downsample": cfg.downsample, "normalization": "[-1, 1]", "perceptual": "off", "summary": "test"},
    ).to_dict())
    return out, model.eval()


def tiny_encoded(root: Path, size: int = 16, seed: int = 2, kind: str = "vqgan") -> Path:
    """synth (24 scenes) -> shards -> a 600-token BPE (context 24) -> a random tokenizer -> encoded (VQ: with MixSel;
    vae: 4-d latents)."""
    synth.run(synth.SynthConfig(count=24, size=size, seed=seed, val_fraction=0.2), root / "raw")
    shard.run(shard.ShardConfig(size=size, image_format="png", shard_size=8), root / "raw", root / "shards", workers=1)
    tokenize_text.run(tokenize_text.TextTokenizerConfig(vocab_size=600, context_length=24), str(root / "shards"),
                      root / "text-tok")
    image_tok, _ = make_image_tok(root / "image-tok", kind, size=size)
    encode.run(encode.EncodeConfig(batch_size=4, mixsel_pairs=int(kind == "vqgan")), root / "shards", image_tok,
               root / "text-tok", root / "encoded", cpu=True)
    return root / "encoded"


def random_inception(file) -> None:
    """torch-fidelity's Inception-v3, random init (He, so activations survive), saved as the released .pth is."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict"):  # its constructor always loads weights
        net = FeatureExtractorInceptionV3("random", ["2048"], feature_extractor_weights_path=empty)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), file)


def artifact_files(artifact: Path) -> dict[str, bytes]:
    """Every file of an artifact but its manifest (which has times and the process count), by relative path."""
    return {str(p.relative_to(artifact)): p.read_bytes() for p in sorted(artifact.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def untimed_metrics(run: Path) -> list[dict[str, float]]:
    """A run's metrics.jsonl lines without the wall-clock numbers, which no two runs share."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in ("seconds", "tokens_per_s")} for line in lines]


def tensorboard_log(run: Path, project: str) -> Any:
    """The EventAccumulator of a run's TensorBoard log (`trackers/<project>`), checked to hold its metrics.jsonl: each
    key but "step" a scalar tag with each line's value at the line's step (TensorBoard keeps float32)."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

    logs = EventAccumulator(str(run / "trackers" / project), size_guidance={SCALARS: 0, IMAGES: 0}).Reload()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert set(logs.Tags()["scalars"]) == {k for line in lines for k in line} - {"step"}
    for tag in logs.Tags()["scalars"]:
        expected = [(line["step"], pytest.approx(line[tag], rel=1e-6)) for line in lines if tag in line]
        assert [(e.step, e.value) for e in logs.Scalars(tag)] == expected, tag
    return logs


def tensorboard_hparams(run: Path, project: str) -> dict[str, Any]:
    """The hyper-parameters of a run's TensorBoard log (SummaryWriter.add_hparams writes them to a sub-folder)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    (sub,) = [p for p in (run / "trackers" / project).iterdir() if any(p.glob("events.out.tfevents.*"))]
    content = EventAccumulator(str(sub)).Reload().PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}
