"""`vltk tokenize label`: train UViM's label autoencoder (stage I of GIVT §4.2 / App. C.3) on the shards' dense labels.

    vltk tokenize label build/demo/shards build/demo/label-tok-panoptic --task panoptic \
        --config stages/demo/tokenize_label_panoptic.toml
    vltk tokenize label build/nyu/shards build/nyu/label-tok --task depth --config stages/paper/tokenize_label_depth.toml

The image size comes from the shards' manifest and, for panoptic with `model.num_classes = 0`, the classes from its
categories (void + one per category). Training reads (image, label) batches of the train split
(`vltk.data.dense.DenseBatches`; the images are unused here, stage II conditions on them) through the shared training
loop (`vltk.objectives.labeltok`). Then, on the val split, the reconstructions from the posterior mean (vae) or the
quantised codes (vq) are scored against the truth: panoptic quality (All / Things / Stuff, the categories' isthing
split) or depth RMSE / AbsRel / delta1 in metres against the unbinned truth, and the same metric of a trivial
baseline beside it: panoptic, every pixel the train split's most frequent semantic class as one segment; depth, the
train split's mean measured depth at each pixel.

The artifact holds `model.safetensors`, `recon.png` (val images, their true labels and the reconstructions,
colourised: `vltk.labeltok.maps`), `metrics.jsonl`, `checkpoints/`, and a manifest (`LabelTokenizerContents`) with the
task, bottleneck, sizes, categories and model config, the metrics in `extra`. A killed run continues from its last
checkpoint when re-run with the same config and inputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vltk.config import config_to_dict, require_range
from vltk.data.dense import (BASELINE_IS, DenseBatches, LabelSpec, baseline, count_labelled, dense_categories,
                             example, ordered_batches, save_examples, scored_truth)
from vltk.errors import VltkError
from vltk.labeltok.artifact import STAGE, WEIGHTS
from vltk.labeltok.config import TASKS, LabelTokenizerConfig
from vltk.labeltok.maps import Categories
from vltk.labeltok.model import LabelAutoencoder
from vltk.metrics.dense import DenseScore
from vltk.objectives.labeltok import LabelTokenizerTask
from vltk.records import LabelTokenizerContents, ShardsContents
from vltk.train import OptimConfig, TrainConfig, make_accelerator, prepare, save_final_weights, train
from vltk.train.launch import begin_shared
from vltk.ui import console


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizeLabelConfig:
    model: LabelTokenizerConfig = dataclasses.field(default_factory=LabelTokenizerConfig)  # image_size: from shards
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train_split: str = "train"
    val_split: str = "val"
    flip: bool = False  # mirror label maps (and images) at random; UViM does, off for the short demo runs
    eval_count: int = 0  # val samples scored; 0 = all
    eval_batch_size: int = 64
    recon_images: int = 8  # val samples shown in recon.png

    def __post_init__(self) -> None:
        require_range(self, "eval_batch_size", "recon_images")
        require_range(self, "eval_count", low=0)


def resolve(cfg: TokenizeLabelConfig, shards: Path) -> tuple[TokenizeLabelConfig, Categories | None]:
    """The config with the shards' image size and (panoptic, when 0) number of classes; the categories."""
    size = ShardsContents.read(shards).image_size
    model = cfg.model
    categories = dense_categories(shards) if model.task == "panoptic" else None
    classes = model.num_classes
    if categories is not None:
        if classes and classes < categories.num_classes:
            raise VltkError(f"model.num_classes {classes} is below the {categories.num_classes} classes (void "
                            f"included) of {shards}'s categories")
        classes = classes or categories.num_classes
    try:
        model = dataclasses.replace(model, image_size=size, num_classes=classes)
    except ValueError as err:
        raise VltkError(f"the label autoencoder does not fit the shards' {size} px labels: {err}") from None
    return dataclasses.replace(cfg, model=model), categories


def label_spec(model: LabelTokenizerConfig, categories: Categories | None) -> LabelSpec:
    return LabelSpec(task=model.task, categories=categories, max_instances=model.max_instances,
                     depth_bins=model.depth_bins, min_depth=model.min_depth, max_depth=model.max_depth)


def run(cfg: TokenizeLabelConfig, shards: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Train the label autoencoder on `shards` into the artifact `out` (continuing a killed run of the same config)."""
    shards, out = Path(shards), Path(out)
    if cfg.model.task not in TASKS:
        raise VltkError(f"unknown task {cfg.model.task!r}: choose from {', '.join(TASKS)}")
    cfg, categories = resolve(cfg, shards)
    spec = label_spec(cfg.model, categories)
    found, skipped = count_labelled(shards, cfg.train_split, spec)
    if found == 0:
        raise VltkError(f"{shards} has no {spec.task} labels ({spec.member}) in its '{cfg.train_split}' split: "
                        f"shard a source that has them")
    if skipped:
        console().print(f"[yellow]note:[/] {skipped} of {found + skipped} '{cfg.train_split}' samples have no "
                        f"{spec.member}; training on the other {found}")
    accelerator = make_accelerator(cfg.train, cpu=cpu)
    job = begin_shared(accelerator, out, stage=STAGE, config=cfg, inputs={"shards": shards}, force=force, resume=True)
    if job is None:
        return out

    torch.manual_seed(cfg.train.seed)  # the same initial weights on every process
    parts = prepare(accelerator, {"model": (LabelAutoencoder(cfg.model), cfg.optim)}, compile=cfg.train.compile)
    data = DenseBatches(shards, cfg.train_split, spec, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                        rank=accelerator.process_index, world_size=accelerator.num_processes, flip=cfg.flip)
    result = train(LabelTokenizerTask(parts, accelerator), data, cfg.train, accelerator=accelerator, work=job.work,
                   label=f"tokenize label ({cfg.model.task}, {cfg.model.bottleneck})")
    if accelerator.is_main_process:
        model = save_final_weights(accelerator, parts["model"], result.ema, job.work / WEIGHTS)
        evaluation = evaluate(model, shards, cfg, spec, job.work / "recon.png", accelerator.device)
        trained = {"steps": result.steps, "resumed_from": result.resumed_from, "seconds": round(result.seconds, 1),
                   "train_samples": found, "skipped": skipped, "final": result.metrics}
        listed = ShardsContents.read(shards).extra["categories"] if categories is not None else None
        job.publish(contents=_contents(cfg, listed, evaluation, trained))
    accelerator.wait_for_everyone()
    return out


@torch.no_grad()
def evaluate(model: LabelAutoencoder, shards: Path, cfg: TokenizeLabelConfig, spec: LabelSpec, grid_file: Path,
             device: torch.device) -> dict[str, Any]:
    """The reconstructions' metric and the trivial baseline's on `cfg.val_split`; writes the grid of examples."""
    trivial = torch.from_numpy(baseline(shards, cfg.train_split, spec))
    scores, base = DenseScore(spec), DenseScore(spec)
    examples: list[np.ndarray] = []
    scored = 0
    for images, labels, samples in ordered_batches(shards, cfg.val_split, spec, cfg.eval_batch_size, cfg.eval_count):
        z, _ = model.encode(labels.to(device))  # vae: the posterior mean; vq: the quantised codewords
        pred = model.predict(model.decode(z)).cpu()
        truth = scored_truth(spec, labels, samples)
        scores.update(pred, truth)
        base.update(trivial.expand_as(truth), truth)
        examples += [example(*e, spec) for e in list(zip(images, truth, pred))[:cfg.recon_images - len(examples)]]
        scored += len(pred)
    if not examples:
        raise VltkError(f"{shards} has no {spec.task} labels in its '{cfg.val_split}' split to evaluate on")
    save_examples(examples, grid_file)
    name = "pq" if spec.task == "panoptic" else "depth"
    return {name: scores.compute(), f"{name}_baseline": base.compute(), "baseline": BASELINE_IS[spec.task],
            "val_samples": scored}


def _contents(cfg: TokenizeLabelConfig, categories: list[dict[str, Any]] | None, evaluation: dict[str, Any],
              trained: dict[str, Any]) -> dict[str, Any]:
    model = cfg.model
    vq = model.bottleneck == "vq"
    summary = f"{model.task} {model.bottleneck} {model.code_side}x{model.code_side} tokens of "
    summary += f"{model.codebook_size} codes" if vq else f"{model.codeword_dim}-d latents"
    if model.task == "panoptic":
        pq, base = evaluation["pq"]["All"]["pq"], evaluation["pq_baseline"]["All"]["pq"]
        summary += f", reconstruction PQ {pq:.3f} (baseline {base:.3f})"
    else:
        rmse, base = evaluation["depth"]["rmse"], evaluation["depth_baseline"]["rmse"]
        summary += f", reconstruction RMSE {rmse:.3f} m (baseline {base:.3f} m)"
    return LabelTokenizerContents(
        task=model.task, bottleneck=model.bottleneck, image_size=model.image_size, code_len=model.code_len,
        latent_channels=model.codeword_dim, model=config_to_dict(model),
        codebook_size=model.codebook_size if vq else None,
        categories=categories,
        extra={**evaluation, "train": trained, "summary": summary},
    ).to_dict()
