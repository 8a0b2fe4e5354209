"""`vltk train-gen LABEL_TOK OUT --model givt-uvim`: UViM's stage II, an image-conditioned GIVT over a label
tokenizer's latents (GIVT §4.2, §5.2, Tab. 3; UViM, Kolesnikov et al. NeurIPS 2022).

    vltk train-gen build/demo/label-tok-panoptic build/demo/gen-uvim-panoptic --model givt-uvim \
        --config stages/demo/train_gen_uvim.toml
    vltk train-gen build/demo/label-tok-panoptic-vq build/demo/gen-uvim-panoptic-vq \
        --config stages/demo/train_gen_uvim.toml
    accelerate launch --num_processes 8 -m vltk train-gen LABEL_TOK OUT \
        --config stages/paper/train_gen_givt_uvim_depth.toml

One generator name for both bottlenecks, picked by the label tokenizer (`vltk tokenize label --bottleneck`), since it
alone decides what the tokens are: a VAE label tokenizer gives GIVT's model (soft tokens, a GMM head, NLL of posterior
draws), a VQ one UViM's original baseline (the same network over code ids, codebook_size = the tokenizer's, softmax
cross-entropy): the same config trains either, so the two compare at equal size and budget. The manifest's
`latent_channels` (GIVT) or `image_vocab` (VQ) and its summary say which it is.

The model is `vltk.models.givt` with a ViT encoder (cross-attention after every self-attention), trained on the train
split of the shards the label tokenizer was trained on (its manifest names them), images mirrored at random with their
labels (`data.flip`, as big_vision's `randu("fliplr")`); the label autoencoder is frozen (`vltk.objectives.uvim`).
The code length, latent width or codebook, and the image size come from the label tokenizer and the shards.
`encoder_weights` starts the ViT from a timm-format state dict (the paper: a pre-trained ViT-L/16).

The optimiser follows big_vision's configs/proj/givt/givt_coco_panoptic.py and givt_nyu_depth.py: lr 1e-3 with a cosine
decay after a warm-up (NYU: 10% of the run; COCO: 4,000 steps), the encoder (`encoder.*`) at lr x 0.1 (their
`lr_mults`, `OptimConfig.lr_mults`), weight decay 1e-6 not scaled by the lr (as AdamW, which scales it: 1e-6 / 1e-3 =
1e-3, on kernels). big_vision uses Adafactor (beta2_cap 0.95); vltk uses AdamW with beta2 = 0.95.

The artifact is a generator artifact (`GeneratorContents`, generator "givt-uvim"; `load_generator` rebuilds it) with
the inputs "label_tok" and "shards", so that `vltk sample --task dense` finds both; `model.safetensors`,
`metrics.jsonl`, `loss.png`, `checkpoints/`. A killed run continues from its last checkpoint when re-run.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import torch

from vltk.artifacts import upstream
from vltk.config import config_to_dict
from vltk.data.dense import DenseBatches, dense_categories
from vltk.errors import VltkError
from vltk.labeltok.artifact import load_label_tokenizer
from vltk.models.artifact import STAGE, WEIGHTS
from vltk.models.givt import GIVT, GIVTConfig
from vltk.models.vit import ViTConfig
from vltk.models.vit_weights import load_timm_vit
from vltk.objectives.uvim import UViMObjective, UViMTask
from vltk.pipeline.tokenize_label import label_spec
from vltk.records import GeneratorContents, LabelTokenizerContents, ShardsContents
from vltk.train import OptimConfig, TrainConfig, make_accelerator, prepare
from vltk.train.fit import Fitted, fit, summary
from vltk.train.launch import begin_shared

GENERATOR = "givt-uvim"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UViMOptim(OptimConfig):
    """big_vision's GIVT UViM optimiser (see the module docstring), as AdamW."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-3  # big_vision's wd 1e-6, unscaled by the lr: 1e-6 / 1e-3 as AdamW
    decay: Literal["matrices", "kernels"] = "kernels"
    warmup_steps: int = 100  # NYU: 10% of the run
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    lr_mults: dict[str, float] = dataclasses.field(default_factory=lambda: {"encoder.*": 0.1})


@dataclasses.dataclass(frozen=True, kw_only=True)
class UViMData:
    split: str = "train"
    flip: bool = True  # mirror images and labels at random (big_vision's randu("fliplr"))


def _model() -> GIVTConfig:
    return GIVTConfig(encoder=ViTConfig(image_size=32, patch_size=4, width=128, depth=2, heads=4),
                      label_dropout=0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTUViMTrainConfig:
    generator: Literal["givt-uvim"] = GENERATOR
    model: GIVTConfig = dataclasses.field(default_factory=_model)  # encoder.image_size: from the shards
    objective: UViMObjective = dataclasses.field(default_factory=UViMObjective)
    data: UViMData = dataclasses.field(default_factory=UViMData)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optim: UViMOptim = dataclasses.field(default_factory=UViMOptim)
    encoder_weights: str | None = None  # a timm-format ViT .safetensors to start the encoder from


def resolve(cfg: GIVTUViMTrainConfig, label_tok: Path) -> tuple[GIVTUViMTrainConfig, LabelTokenizerContents, Path]:
    """The config with the label tokenizer's and the shards' sizes filled in; the tokenizer's record; the shards."""
    contents = LabelTokenizerContents.read(label_tok)
    shards = upstream(label_tok, "shards")
    if cfg.model.encoder is None:
        raise VltkError("givt-uvim needs an image encoder: set the model.encoder.* keys")
    vq = contents.bottleneck == "vq"
    try:
        encoder = dataclasses.replace(cfg.model.encoder, image_size=ShardsContents.read(shards).image_size)
        model = dataclasses.replace(
            cfg.model, encoder=encoder, image_tokens=contents.code_len, variant="causal", num_classes=0,
            text_vocab=0, text_tokens=0, label_dropout=0.0, codebook_size=contents.codebook_size if vq else 0,
            gmm=dataclasses.replace(cfg.model.gmm, channels=contents.latent_channels)).sized()
    except ValueError as err:
        raise VltkError(f"the UViM model does not fit {label_tok} and its shards: {err}") from None
    return dataclasses.replace(cfg, model=model), contents, shards


def run(cfg: GIVTUViMTrainConfig, label_tok: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Train the UViM GIVT of `cfg` on the label tokenizer `label_tok` into the artifact `out`."""
    label_tok, out = Path(label_tok), Path(out)
    cfg, contents, shards = resolve(cfg, label_tok)
    weights = Path(cfg.encoder_weights) if cfg.encoder_weights else None
    if weights is not None and not weights.is_file():
        raise VltkError(f"encoder_weights not found: {weights}")
    accelerator = make_accelerator(cfg.train, cpu=cpu)
    job = begin_shared(accelerator, out, stage=STAGE, config=cfg, inputs={"label_tok": label_tok, "shards": shards},
                       force=force, resume=True)
    if job is None:
        return out

    torch.manual_seed(cfg.train.seed)  # the same initial weights on every process
    model = GIVT(cfg.model)
    if weights is not None:
        load_timm_vit(model.encoder, weights)
    label_model, _ = load_label_tokenizer(label_tok, accelerator.device)
    label_model.requires_grad_(False)
    parts = prepare(accelerator, {"model": (model, cfg.optim)}, compile=cfg.train.compile)
    categories = dense_categories(shards) if contents.task == "panoptic" else None
    data = DenseBatches(shards, cfg.data.split, label_spec(label_model.cfg, categories),
                        batch_size=cfg.train.batch_size, seed=cfg.train.seed, rank=accelerator.process_index,
                        world_size=accelerator.num_processes, flip=cfg.data.flip)
    task = UViMTask(parts, label_model, cfg.objective, accelerator, global_batch=cfg.train.batch_size,
                    seed=cfg.train.seed)
    name = _name(cfg, contents)
    fitted = fit(task, data, cfg.train, accelerator, job.work, weights=job.work / WEIGHTS, config=config_to_dict(cfg),
                 project=f"vltk-{STAGE}", run=out.name, label=f"train-gen ({name})", title=name)
    if accelerator.is_main_process:  # after the trackers closed their files in the work folder about to be renamed
        job.publish(contents=_contents(cfg, contents, fitted, name))
    accelerator.wait_for_everyone()
    return out


def _name(cfg: GIVTUViMTrainConfig, contents: LabelTokenizerContents) -> str:
    kind = "UViM VQ baseline" if cfg.model.codebook_size else "GIVT-Causal"
    return f"{kind} {contents.task} (ViT {cfg.model.encoder.width}x{cfg.model.encoder.depth}, decoder {cfg.model.size})"


def _contents(cfg: GIVTUViMTrainConfig, labels: LabelTokenizerContents, fitted: Fitted, name: str) -> dict[str, Any]:
    record = fitted.record(("loss", "nll_per_dim"))
    vq = bool(cfg.model.codebook_size)
    return GeneratorContents(
        generator=GENERATOR, model=config_to_dict(cfg.model), grid_size=math.isqrt(labels.code_len),
        image_size=labels.image_size, ids={}, text_vocab=0,
        image_tokens=cfg.model.image_tokens, text_tokens=0, image_vocab=cfg.model.codebook_size if vq else None,
        latent_channels=None if vq else cfg.model.latent_channels,
        extra={"task": labels.task, "bottleneck": labels.bottleneck, **record, "summary": summary(name, record)},
    ).to_dict()
