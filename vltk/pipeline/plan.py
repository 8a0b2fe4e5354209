"""`vltk plan`: size a `make paper` run before launching it: per stage the steps, samples, tokens, FLOPs and
GPU-hours at a stated MFU, from the stage configs and the data set's size. Nothing is trained or read but configs.

    vltk plan                                                  # COCO 2014 (Karpathy train: 113,287 images), H100s
    vltk plan --images 118287 --gpu a100 --gpus 16 --mfu 0.35  # another data set or machine
    vltk plan --set taming=true --json plan.json              # with the released VQ-GAN: no tokenizer to train

FLOPs (multiply-adds count 2):
- transformers (MAGVLT, ARGVLT), per token of a pass: forward 2 P + 4 L T d, where P counts the trunk's weights, L
  layers of width d see T tokens (attention's QK^T and AV: PaLM, Chowdhery et al. 2022, App. B), plus 2 d (d + V) per
  row of the MLM head over a V-word table (upper bound: every position of the generated modality); training = 3 x
  forward. A MAGVLT
  step runs 1 + UnrollMask's share (T2I and I2T steps) + MixSel's pass per sample, by the objective's task weights.
- convolutional networks (the image tokenizer, its discriminator, LPIPS's VGG16, the FID Inception): counted by
  torch's FlopCounterMode on one image, on the meta device (nothing is allocated).
- sampling: MAGVLT T2I image_steps passes (2 rows each with guidance), I2T one length pass + text_steps passes, each
  over the whole sequence; ARGVLT one pass's worth per sample through its KV cache; then the image decoder per
  candidate. Re-ranking by CLIP (ViT-B/32, ~4.4 GFLOPs an image) is below the shown precision and left out.
GPU-hours = FLOPs / (peak x MFU) / 3600, with the dense bf16 peak of the data sheets (H100 / H200 SXM 989 TFLOP/s,
A100 312); wall hours divide by the GPU count. Real MFU is lower for the convolutional stages and for small sampling
batches: the plan is a lower bound on time, exact in FLOPs up to the stated upper bounds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from vltk.config import load_config, read_toml, require_range
from vltk.errors import VltkError
from vltk.imagetok import build_image_tokenizer
from vltk.imagetok.discriminator import PatchDiscriminator
from vltk.models.argvlt import ARGVLT
from vltk.models.magvlt import MAGVLT
from vltk.pipeline import encode, sample
from vltk.pipeline.tokenize_image import TokenizeImageConfig
from vltk.pipeline.train_gen import CONFIGS, ARGVLTTrainConfig, MAGVLTTrainConfig
from vltk.ui import console

PEAK = {"h100": 989e12, "h200": 989e12, "a100": 312e12}  # dense bf16 FLOP/s (NVIDIA data sheets, SXM)
INCEPTION_SIZE = 299  # torch-fidelity resizes every image to 299 px


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanConfig:
    stages: str = "stages/paper"  # the folder of stage configs `make paper` uses (PAPER_CFG)
    images: int = 113_287  # training images (Karpathy's COCO 2014 train + restval; COCO 2017 train: 118,287)
    captions: int = 5  # per image (COCO: 5; one is drawn per sample)
    text_vocab: int = 49_408  # CLIP's BPE (make paper's default text tokenizer)
    taming: bool = False  # the released VQ-GAN is imported (VQGAN=...): no tokenizer to train
    # make paper with CLIP re-ranks 32 images per caption, 64 captions per image (MAGVLT §4.1)
    t2i_candidates: int = 32
    i2t_candidates: int = 64
    gpu: str = "h100"
    gpus: int = 8
    mfu: float = 0.4

    def __post_init__(self) -> None:
        require_range(self, "images", "captions", "text_vocab", "t2i_candidates", "i2t_candidates", "gpus")
        if self.gpu not in PEAK:
            raise ValueError(f"gpu must be one of {', '.join(PEAK)}, got {self.gpu!r}")
        if not 0 < self.mfu <= 1:
            raise ValueError(f"mfu must be in (0, 1], got {self.mfu}")


@dataclasses.dataclass(frozen=True)
class Row:
    stage: str
    what: str
    steps: int | None  # optimiser steps (training stages)
    samples: int  # images (or image-caption pairs) through the stage
    tokens: int | None  # transformer tokens processed (all passes)
    flops: float


def counted(build: Callable[[], torch.nn.Module], *shape: int) -> float:
    """Forward FLOPs of the module `build` makes, on one input of `shape`, counted on the meta device."""
    with torch.device("meta"):
        net = build().eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(*shape))
    return float(counter.get_total_flops())


def pass_flops(trunk: torch.nn.Module, width: int, depth: int, tokens: int, logit_rows: int, vocab: int) -> float:
    """Forward FLOPs of one pass of a transformer over `tokens` positions: 2 P + 4 L T d per token (P: the trunk's
    matmul weights), plus MaskGIT's MLM head for each of `logit_rows` output rows: its d x d transform and the logits
    over a `vocab`-word table, 2 d (d + V)."""
    weights = sum(p.numel() for p in trunk.parameters() if p.dim() == 2)  # matmul weights, not norms or biases
    return tokens * (2 * weights + 4 * depth * tokens * width) + 2 * width * (width + vocab) * logit_rows


def _path(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise VltkError(f"{path} not found: vltk plan reads the stage configs of --stages ({folder})")
    return path


def _config(cls: type, folder: Path, name: str) -> Any:
    return load_config(cls, _path(folder, name), ())


def generator(folder: Path, name: str, sizes: dict[str, int]
              ) -> tuple[MAGVLTTrainConfig | ARGVLTTrainConfig, torch.nn.Module]:
    """A generator's run config from `folder` / `name` with the data's sizes, and its model built on the meta device."""
    kind = read_toml(_path(folder, name)).get("generator", "magvlt")
    run = _config(CONFIGS[kind], folder, name)
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, **sizes).sized())
    with torch.device("meta"):
        model = (MAGVLT if kind == "magvlt" else ARGVLT)(run.model)
    return run, model


def plan(cfg: PlanConfig) -> list[Row]:
    folder = Path(cfg.stages)
    tok = _config(TokenizeImageConfig, folder, "tokenize_image.toml")
    size = int(read_toml(folder / "shard.toml").get("size", 256)) if (folder / "shard.toml").is_file() else 256
    image = dataclasses.replace(tok.model, image_size=size)
    context = int(read_toml(folder / "tokenize_text.toml").get("context_length", 64))
    grid = image.grid_size
    sizes = {"image_vocab": image.quantizer.codebook_size, "text_vocab": cfg.text_vocab, "image_tokens": grid * grid,
             "text_tokens": context}
    pixels = (1, 3, size, size)
    if image.kind != "vqgan":
        raise VltkError(f"vltk plan sizes make paper's chain, whose image tokenizer is a VQ-GAN ({folder} has a "
                        f"{image.kind})")
    # The quantiser's nearest-code search (2 K code_dim per token) is below the shown precision and left out.
    encoder = counted(lambda: _Half(build_image_tokenizer(image), "encode"), *pixels)
    decoder = counted(lambda: _Half(build_image_tokenizer(image), "decode"), 1, image.quantizer.code_dim, grid, grid)
    coder = encoder + decoder  # a training forward
    rows = []
    if not cfg.taming:
        disc = counted(lambda: PatchDiscriminator(ndf=tok.loss.disc_channels, n_layers=tok.loss.disc_layers,
                                                  norm=tok.loss.disc_norm), *pixels)
        vgg = (counted(lambda: torchvision.models.vgg16(weights=None).features, *pixels)
               if tok.loss.perceptual_weight else 0)
        # per image: the autoencoder, LPIPS on the reconstruction and the target, the discriminator on both; x3
        per_image = 3 * (coder + 2 * vgg + 2 * disc)
        n = tok.train.steps * tok.train.batch_size
        rows.append(Row("tokenize image", f"{image.kind} f{image.downsample}, {size} px, {n / cfg.images:,.0f} epochs",
                        tok.train.steps, n, None, per_image * n))
    enc = _config(encode.EncodeConfig, folder, "encode.toml")
    encoded = cfg.images * (1 + enc.mixsel_pairs)
    rows.append(Row("encode", f"{cfg.images:,} images + {enc.mixsel_pairs} MixSel pair each", None, encoded, None,
                    encoder * encoded))
    seq = 4 + grid * grid + context
    runs = {name: generator(folder, f"train_gen_{name}.toml", sizes) for name in ("magvlt", "argvlt")}
    for run, model in runs.values():
        row = _train_row(run, model, seq)
        rows.append(dataclasses.replace(row, what=f"{row.what}, {row.samples / cfg.images:,.0f} epochs"))
    magvlt, model = runs["magvlt"]  # the sampler's model
    width, depth = magvlt.model.width, magvlt.model.depth
    for task, candidates in (("t2i", cfg.t2i_candidates), ("i2t", cfg.i2t_candidates)):
        s = _config(sample.SampleConfig, folder, f"sample_{task}.toml")
        m = s.magvlt
        if task == "t2i":
            passes = m.image_steps * (2 if m.guidance else 1)
            per = passes * pass_flops(model.transformer, width, depth, seq, grid * grid, sizes["image_vocab"])
        else:
            passes = (1 + m.text_steps) * (2 if m.guidance else 1)
            per = passes * pass_flops(model.transformer, width, depth, seq, context, cfg.text_vocab)
        n = s.count * candidates
        rows.append(Row(f"sample {task}", f"{s.count:,} x {candidates} candidates, {passes} passes", None, n,
                        n * passes * seq, n * (per + decoder)))
    inception = counted(lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False),
                        1, 3, INCEPTION_SIZE, INCEPTION_SIZE)
    t2i = _config(sample.SampleConfig, folder, "sample_t2i.toml").count
    rows.append(Row("score", f"FID / IS: {t2i:,} generated + {t2i:,} real images", None, 2 * t2i, None,
                    2 * t2i * inception))
    return rows


def _train_row(run: MAGVLTTrainConfig | ARGVLTTrainConfig, model: torch.nn.Module, seq: int) -> Row:
    """A generator's training: steps x global batch samples, each 3 x the forward FLOPs of its passes."""
    m = run.model
    logits = m.image_tokens + m.text_tokens  # upper bound: a logit row at every position
    forward = pass_flops(model.transformer, m.width, m.depth, seq, logits, m.image_vocab + m.text_vocab)
    passes = 1.0
    if isinstance(run, MAGVLTTrainConfig):
        t2i, i2t, it2it = run.objective.task_weights
        passes += run.objective.unroll * (t2i + i2t) / (t2i + i2t + it2it) + run.objective.mixsel
    n = run.train.steps * run.train.batch_size
    what = f"{run.generator} {m.size} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M), {passes:.1f} passes"
    return Row(f"train-gen {run.generator}", what, run.train.steps, n, int(n * passes * seq), 3 * passes * forward * n)


class _Half(torch.nn.Module):
    """A VQ-GAN's encoder (pixels -> pre-quantisation latents) or decoder (quantised latents -> pixels)."""

    def __init__(self, tokenizer: torch.nn.Module, half: str):
        super().__init__()
        self.tokenizer, self.half = tokenizer, half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokenizer
        return t.quant_conv(t.encoder(x)) if self.half == "encode" else t.decode_latents(x)


def hours(cfg: PlanConfig, flops: float) -> float:
    """GPU-hours of `flops` at cfg.mfu of the GPU's peak."""
    return flops / (PEAK[cfg.gpu] * cfg.mfu) / 3600


def report(cfg: PlanConfig, rows: list[Row]) -> dict[str, Any]:
    total = sum(r.flops for r in rows)
    return {"gpu": cfg.gpu, "gpus": cfg.gpus, "mfu": cfg.mfu, "peak_flops": PEAK[cfg.gpu],
            "stages": [{**dataclasses.asdict(r), "gpu_hours": round(hours(cfg, r.flops), 2),
                        "wall_hours": round(hours(cfg, r.flops) / cfg.gpus, 2)} for r in rows],
            "total": {"flops": total, "gpu_hours": round(hours(cfg, total), 1),
                      "wall_hours": round(hours(cfg, total) / cfg.gpus, 1)}}


def run(cfg: PlanConfig, json_out: Path | None = None) -> dict[str, Any]:
    """Print the plan of `cfg` (and write it as JSON to `json_out`); return it."""
    result = report(cfg, plan(cfg))
    shown = [[s["stage"], f"{s['steps']:,}" if s["steps"] else "", f"{s['samples']:,}",
              f"{s['tokens'] / 1e9:,.0f} G" if s["tokens"] else "", _flops(s["flops"]), f"{s['gpu_hours']:,.1f}",
              f"{s['wall_hours']:,.2f}"] for s in result["stages"]]
    shown.append(["total", "", "", "", _flops(result["total"]["flops"]), f"{result['total']['gpu_hours']:,.1f}",
                  f"{result['total']['wall_hours']:,.2f}"])
    view = Table(title=f"plan: {cfg.stages} on {cfg.images:,} images, {cfg.gpus} x {cfg.gpu.upper()} at "
                       f"{cfg.mfu:.0%} MFU")
    for column in ("stage", "steps", "samples", "tokens", "FLOPs", "GPU-h", "wall h"):
        view.add_column(column, justify="left" if column == "stage" else "right", no_wrap=True)
    for line in shown:
        view.add_row(*line)
    console().print(view)
    for s in result["stages"]:
        console().print(f"  {s['stage']}: {s['what']}")
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _flops(x: float) -> str:
    """FLOPs in engineering notation (1.2e21 -> '1.2 ZFLOP')."""
    for exp, unit in ((21, "Z"), (18, "E"), (15, "P"), (12, "T"), (9, "G")):
        if x >= 10**exp:
            return f"{x / 10**exp:,.1f} {unit}"
    return f"{x:.3g}" if math.isfinite(x) else "?"
