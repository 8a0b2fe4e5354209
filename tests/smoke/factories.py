"""Tiny artifacts the smoke and dist tests build on: a random-init image tokenizer, a whole encoded data set and
random-init Inception weights in the released file's format; and an artifact's files, to compare two runs."""

from __future__ import annotations

import io
from pathlib import Path
from unittest import mock

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
