"""Tiny artifacts the tests build on: a random-init image tokenizer, a whole encoded data set, a UViM generator,
random-init Inception weights in the released file's format and taming's checkpoint layout; an artifact's files, to
compare two runs.

The expensive ones are built once per test process by the fixtures in tests/conftest.py; call these directly only for
an artifact with other settings."""

from __future__ import annotations

import io
import json
import shutil
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

from tests.helpers import TINY_LABEL_TOK, TINY_UVIM, run_cli, sets


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


def tiny_uvim(root: Path, task: str, bottleneck: str) -> Path:
    """A `givt-uvim` generator on 16 synth scenes of 16 px with dense labels (root/shards, made once a root), over a
    `task` label tokenizer with a `bottleneck` (root/tok-TASK-BOTTLENECK); returns root/gen-TASK-BOTTLENECK."""
    if not (root / "shards").is_dir():
        synth.run(synth.SynthConfig(count=16, size=16, seed=2, val_fraction=0.25), root / "raw")
        shard.run(shard.ShardConfig(size=16, image_format="png", shard_size=8), root / "raw", root / "shards",
                  workers=1)
    tok, gen = root / f"tok-{task}-{bottleneck}", root / f"gen-{task}-{bottleneck}"
    run_cli("tokenize", "label", root / "shards", tok, "--task", task, "--bottleneck", bottleneck, "--cpu",
            *sets(*TINY_LABEL_TOK))
    run_cli("train-gen", tok, gen, "--model", "givt-uvim", "--cpu", *sets(*TINY_UVIM))
    return gen


def copy_build(build: Path, into: Path) -> Path:
    """A copy of a build folder (artifacts side by side, as `make demo` leaves them) in `into`: each artifact names its
    inputs by relative path first, so the copy's chain is its own and a test may write beside it."""
    shutil.copytree(build, into, dirs_exist_ok=True)
    return into


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


# A CLIP ViT small enough for the CPU: one layer per tower, 32 px images, CLIP's own text vocabulary.
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def tiny_clip(root: Path) -> tuple[str, Path, torch.nn.Module]:
    """(arch, weights, model): TINY_CLIP, random-init, registered with open_clip as 'vltk-tiny-clip' and saved as
    root/clip.safetensors; the model in eval mode. Skips the test where open_clip (the `clip` extra) is missing."""
    open_clip = pytest.importorskip("open_clip")
    (root / "vltk-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(root / "vltk-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("vltk-tiny-clip").eval()
    weights = root / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    return "vltk-tiny-clip", weights, model


def artifact_files(artifact: Path) -> dict[str, bytes]:
    """Every file of an artifact but its manifest (which has times and the process count), by relative path."""
    return {str(p.relative_to(artifact)): p.read_bytes() for p in sorted(artifact.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def taming_shapes(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, embed_dim, n_embed):
    """Key -> shape of taming's VQModel state dict (double_z False, no timestep embedding), loss.* excluded."""
    shapes = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (c,)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    n = len(ch_mult)
    # Encoder
    conv("encoder.conv_in", 3, ch, 3)
    in_mult, res = (1, *ch_mult), resolution
    for i in range(n):
        block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if res in attn_resolutions:
                attn(f"encoder.down.{i}.attn.{j}", block_in)
        if i != n - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            res //= 2
    resnet("encoder.mid.block_1", block_in, block_in)
    attn("encoder.mid.attn_1", block_in)
    resnet("encoder.mid.block_2", block_in, block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, z_channels, 3)
    # Decoder
    block_in, res = ch * ch_mult[-1], resolution // 2 ** (n - 1)
    conv("decoder.conv_in", z_channels, block_in, 3)
    resnet("decoder.mid.block_1", block_in, block_in)
    attn("decoder.mid.attn_1", block_in)
    resnet("decoder.mid.block_2", block_in, block_in)
    for i in reversed(range(n)):
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if res in attn_resolutions:
                attn(f"decoder.up.{i}.attn.{j}", block_in)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, 3, 3)
    # VQModel
    shapes["quantize.embedding.weight"] = (n_embed, embed_dim)
    conv("quant_conv", z_channels, embed_dim, 1)
    conv("post_quant_conv", embed_dim, z_channels, 1)
    return shapes


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
