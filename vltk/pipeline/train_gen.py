"""`vltk train-gen`: train a MAGVLT, ARGVLT or GIVT generator on an encoded artifact with the shared training loop.

    vltk train-gen build/demo/encoded build/demo/gen --model magvlt --config stages/demo/train_gen.toml
    vltk train-gen build/demo/encoded-vae build/demo/gen-givt --model givt-causal --config stages/demo/train_gen_givt.toml
    vltk train-gen build/demo/label-tok-panoptic build/demo/gen-uvim-panoptic --model givt-uvim   # vltk.pipeline.train_uvim
    accelerate launch --num_processes 8 -m vltk train-gen ENCODED OUT --config stages/paper/train_gen_magvlt.toml

MAGVLT and ARGVLT read VQ-encoded artifacts, GIVT VAE-encoded ones (its latent channels come from there). The codebook
size, grid, text vocabulary and context come from the encoded artifact's manifest; the BPE-dropout rate
from the text tokenizer's (unless the config sets one). The global batch, gradient accumulation and learning rate are
the config's whatever the number of processes. A killed run continues from its last checkpoint when re-run with the
same config and inputs.

The artifact holds `model.safetensors` (the EMA weights when EMA is on), `metrics.jsonl`, `loss.png`, `checkpoints/`,
`trackers/` when `train.log_with` names TensorBoard or MLflow (the metrics, the config and `loss.png` at the last step:
`vltk.train.tracking`) and a manifest with the model config, the tokenizers' paths (so that `vltk sample` finds them),
the training numbers and the learning curve's first and last values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import torch
from accelerate import Accelerator

from vltk.artifacts import upstream
from vltk.config import config_to_dict, load_config, read_toml
from vltk.data.token_batches import TokenBatches
from vltk.errors import VltkError
from vltk.models.argvlt import ARGVLTConfig
from vltk.models.artifact import GENERATORS, STAGE, WEIGHTS
from vltk.models.givt import GIVTConfig
from vltk.models.magvlt import MAGVLTConfig
from vltk.objectives.argvlt import ARGVLTObjective, ARGVLTTask
from vltk.objectives.givt import GIVTObjective, GIVTTask
from vltk.objectives.magvlt import MAGVLTObjective, MAGVLTTask
from vltk.pipeline import train_uvim
from vltk.pipeline.train_uvim import GIVTUViMTrainConfig
from vltk.records import EncodedContents, GeneratorContents
from vltk.text.bpe import BPETokenizer
from vltk.train import OptimConfig, TrainConfig, make_accelerator, prepare
from vltk.train.fit import Fitted, fit, summary as fit_summary
from vltk.train.launch import begin_shared

Generator = Literal["magvlt", "argvlt", "givt-causal", "givt-maskgit"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorOptim(OptimConfig):
    """The paper's optimiser where it is known (MAGVLT App. A): AdamW (0.9, 0.95), clipping at norm 4,
    cosine annealing; the peak lr and weight decay were lost, the defaults are the Kakao siblings' values."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 4.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenDataConfig:
    split: str = "train"
    bpe_dropout: float | None = None  # None: the rate the text tokenizer's manifest records (paper: 0.1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TrainGenCommon:
    """What every generator run has besides its model and objective."""

    data: GenDataConfig = dataclasses.field(default_factory=GenDataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optim: GeneratorOptim = dataclasses.field(default_factory=GeneratorOptim)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MAGVLTTrainConfig(_TrainGenCommon):
    generator: Literal["magvlt"] = "magvlt"
    model: MAGVLTConfig = dataclasses.field(default_factory=MAGVLTConfig)
    objective: MAGVLTObjective = dataclasses.field(default_factory=MAGVLTObjective)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ARGVLTTrainConfig(_TrainGenCommon):
    generator: Literal["argvlt"] = "argvlt"
    model: ARGVLTConfig = dataclasses.field(default_factory=ARGVLTConfig)
    objective: ARGVLTObjective = dataclasses.field(default_factory=ARGVLTObjective)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTOptim(OptimConfig):
    """GIVT's optimiser (GIVT §4.1; big_vision configs/proj/givt): Adam (0.9, 0.95), lr 1e-3, clipping at norm 1,
    cosine to 0 after a warm-up. big_vision's weight decay 1e-4 is not scaled by the base lr and hits Dense / conv
    kernels only (big_vision/optax.py): as AdamW (which scales it by the lr) that is wd / lr = 1e-4 / 1e-3 = 0.1 on
    kernels. MaskGIT: no decay."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    decay: Literal["matrices", "kernels"] = "kernels"
    warmup_steps: int = 100  # the paper: 10% of the run
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTCondition:
    """What GIVT is conditioned on: the caption (the encoded BPE ids, prefixed) and / or a class label read from each
    record's meta field `class_key` (an id in [0, num_classes) or one of `class_names`). Neither: unconditional."""

    text: bool = True
    num_classes: int = 0
    class_names: tuple[str, ...] = ()  # empty: the classes are the ids 0 .. num_classes - 1
    class_key: str = "label"

    def __post_init__(self) -> None:
        if self.num_classes < 0 or (self.class_names and len(self.class_names) != self.num_classes):
            raise ValueError(f"class_names must name all num_classes = {self.num_classes} classes (or be empty)")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_names or tuple(str(i) for i in range(self.num_classes))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTTrainConfig(_TrainGenCommon):
    model: GIVTConfig = dataclasses.field(default_factory=GIVTConfig)
    objective: GIVTObjective = dataclasses.field(default_factory=GIVTObjective)
    condition: GIVTCondition = dataclasses.field(default_factory=GIVTCondition)
    optim: GIVTOptim = dataclasses.field(default_factory=GIVTOptim)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTCausalTrainConfig(GIVTTrainConfig):
    generator: Literal["givt-causal"] = "givt-causal"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTMaskGITTrainConfig(GIVTTrainConfig):
    generator: Literal["givt-maskgit"] = "givt-maskgit"
    optim: GIVTOptim = dataclasses.field(default_factory=lambda: GIVTOptim(weight_decay=0.0))


TrainGenConfig = Union[MAGVLTTrainConfig, ARGVLTTrainConfig, GIVTCausalTrainConfig, GIVTMaskGITTrainConfig,
                       GIVTUViMTrainConfig]
CONFIGS: dict[str, type] = {"magvlt": MAGVLTTrainConfig, "argvlt": ARGVLTTrainConfig,
                            "givt-causal": GIVTCausalTrainConfig, "givt-maskgit": GIVTMaskGITTrainConfig,
                            "givt-uvim": GIVTUViMTrainConfig}
# Metrics whose first and last logged values the manifest keeps (those a run logged).
CURVE = ("loss", "t2i/image_acc", "i2t/text_acc", "i2t/length_acc", "it2it/image_acc", "it2it/text_acc",
         "t2i/image", "t2i/text", "i2t/image", "i2t/text", "nll_per_dim")


def load_train_config(model: str | None, config: Path | None, overrides: Sequence[str] = (),
                      flags: dict[str, Any] | None = None) -> TrainGenConfig:
    """The run's config, layered as every stage's (defaults <- TOML <- flags <- overrides), of the generator `model`
    names, else the one the TOML's `generator` key names, else MAGVLT."""
    kind = model or (read_toml(config).get("generator") if config else None) or "magvlt"
    if kind not in CONFIGS:
        raise VltkError(f"--model must be one of {', '.join(CONFIGS)}, got {kind!r}")
    return load_config(CONFIGS[kind], config, overrides, {"generator": kind, **(flags or {})})


def resolve(cfg: TrainGenConfig, encoded: Path) -> tuple[TrainGenConfig, EncodedContents]:
    """The config with the encoded artifact's sizes and the BPE-dropout rate filled in, and that artifact's record."""
    contents = EncodedContents.read(encoded)
    givt = isinstance(cfg, GIVTTrainConfig)
    if contents.kind != ("vae" if givt else "vq"):
        need, tok = ("continuous latents", "vae") if givt else ("VQ codes", "vqgan")
        raise VltkError(f"{encoded} holds {'VQ codes' if givt else 'continuous latents'}; {cfg.generator.upper()} "
                        f"needs {need} (encode with a {tok} image tokenizer)")
    if cfg.data.split not in contents.splits:
        raise VltkError(f"{encoded} has no '{cfg.data.split}' split (it has {', '.join(contents.splits)})")
    grid, text = contents.grid_size ** 2, (contents.text_vocab_size, contents.context_length)
    if givt:
        text = text if cfg.condition.text else (0, 0)
        sizes = {"image_tokens": grid, "text_vocab": text[0], "text_tokens": text[1],
                 "num_classes": cfg.condition.num_classes, "variant": cfg.generator.removeprefix("givt-"),
                 "gmm": dataclasses.replace(cfg.model.gmm, channels=contents.latent_channels)}
    else:
        sizes = {"image_vocab": contents.codebook_size, "text_vocab": text[0], "image_tokens": grid,
                 "text_tokens": text[1]}
    dropout = cfg.data.bpe_dropout if cfg.data.bpe_dropout is not None else contents.bpe_dropout
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **sizes).sized(),
                              data=dataclasses.replace(cfg.data, bpe_dropout=dropout))
    return cfg, contents


def _tokenizer(encoded: Path, dropout: float) -> BPETokenizer | None:
    """The text tokenizer, needed to re-tokenise captions with BPE-dropout (None when the rate is 0)."""
    if dropout == 0:
        return None
    try:
        path = upstream(encoded, "text_tok")
    except VltkError as err:
        raise VltkError(f"BPE-dropout needs the text tokenizer that {encoded} was encoded with: {err}; "
                        "set data.bpe_dropout = 0 or restore it") from None
    return BPETokenizer.from_artifact(path)


def _task(cfg: TrainGenConfig, parts: dict, accelerator: Accelerator, grid: int) -> MAGVLTTask | ARGVLTTask | GIVTTask:
    common = {"global_batch": cfg.train.batch_size, "seed": cfg.train.seed}
    if isinstance(cfg, MAGVLTTrainConfig):
        return MAGVLTTask(parts, cfg.objective, accelerator, grid_size=grid, **common)
    if isinstance(cfg, GIVTTrainConfig):
        return GIVTTask(parts, cfg.objective, accelerator, **common)
    return ARGVLTTask(parts, cfg.objective, accelerator, **common)


def run(cfg: TrainGenConfig, encoded: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Train the generator of `cfg` on `encoded` into the artifact `out` (continuing a killed run of the same config);
    givt-uvim's input is a label tokenizer instead (`vltk.pipeline.train_uvim`)."""
    if isinstance(cfg, GIVTUViMTrainConfig):
        return train_uvim.run(cfg, encoded, out, force=force, cpu=cpu)
    encoded, out = Path(encoded), Path(out)
    cfg, contents = resolve(cfg, encoded)
    mixsel = isinstance(cfg, MAGVLTTrainConfig) and cfg.objective.mixsel
    accelerator = make_accelerator(cfg.train, cpu=cpu, find_unused_parameters=isinstance(cfg, MAGVLTTrainConfig))
    job = begin_shared(accelerator, out, stage=STAGE, config=cfg, inputs={"encoded": encoded}, force=force, resume=True)
    if job is None:
        return out

    torch.manual_seed(cfg.train.seed)  # the same initial weights on every process
    model = GENERATORS[cfg.generator][0](cfg.model)
    parts = prepare(accelerator, {"model": (model, cfg.optim)}, compile=cfg.train.compile)
    task = _task(cfg, parts, accelerator, contents.grid_size)
    givt = isinstance(cfg, GIVTTrainConfig)
    dropout = cfg.data.bpe_dropout if not givt or cfg.condition.text else 0.0
    classes = {"classes": cfg.condition.classes, "class_key": cfg.condition.class_key} if givt else {}
    data = TokenBatches(encoded, cfg.data.split, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                        rank=accelerator.process_index, world_size=accelerator.num_processes, mixsel=mixsel,
                        bpe_dropout=dropout, tokenizer=_tokenizer(encoded, dropout), **classes)
    label = f"train-gen ({cfg.generator} {cfg.model.size}{'; NLL in nats, negative is expected' * givt})"
    fitted = fit(task, data, cfg.train, accelerator, job.work, weights=job.work / WEIGHTS, config=config_to_dict(cfg),
                 project=f"vltk-{STAGE}", run=out.name, label=label, title=f"{cfg.generator} {cfg.model.size}")
    if accelerator.is_main_process:  # after the trackers closed their files in the work folder about to be renamed
        job.publish(contents=_contents(cfg, contents, fitted))
    accelerator.wait_for_everyone()
    return out


def _contents(cfg: TrainGenConfig, encoded: EncodedContents, fitted: Fitted) -> dict[str, Any]:
    record = fitted.record(CURVE)
    curve = record["curve"]
    summary = fit_summary(f"{cfg.generator} {cfg.model.size}", record)
    if "nll_per_dim" in curve:
        summary += f", NLL per dimension {curve['nll_per_dim']['last']:.3f}"
    if "t2i/image_acc" in curve:
        kind = "masked" if cfg.generator == "magvlt" else "next"
        summary += f", T2I {kind}-token accuracy {curve['t2i/image_acc']['last']:.1%}"
    kind = ({"latent_channels": cfg.model.latent_channels, "classes": list(cfg.condition.classes),
             "class_key": cfg.condition.class_key} if isinstance(cfg, GIVTTrainConfig)
            else {"image_vocab": cfg.model.image_vocab})
    return GeneratorContents(
        generator=cfg.generator, model=config_to_dict(cfg.model), **kind, text_vocab=cfg.model.text_vocab,
        image_tokens=cfg.model.image_tokens, text_tokens=cfg.model.text_tokens, grid_size=encoded.grid_size,
        image_size=encoded.image_size,
        ids={"eos_id": encoded.eos_id, "pad_id": encoded.pad_id, "sep_id": encoded.sep_id, "sot_id": encoded.sot_id},
        extra={**record, "summary": summary},
    ).to_dict()
