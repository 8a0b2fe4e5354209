"""One training loop for tokenizers and generators, on accelerate, counted in optimiser steps, resumable exactly.

    accelerator = make_accelerator(train_cfg, cpu=False)
    parts = prepare(accelerator, {"model": (model, optim_cfg), "disc": (disc, disc_optim_cfg)}, compile=False)
    task = MyTask(parts, accelerator)               # owns the losses; its train_step calls accelerator.backward
    result = train(task, data, train_cfg, accelerator=accelerator, work=job.work, label="tokenize image")

What is trained is a `Task`: named `Part`s (a module with its optimiser and optimiser config) and
`train_step(micro_batch, step) -> metrics` which computes the losses of one micro-batch and back-propagates them. The
loop owns everything else: the data position, gradient accumulation (`batch_size` is the global batch, split over
processes and then `grad_accum` micro-batches), the learning rate of every optimiser (`lr_at`), gradient clipping, the
optimiser steps, the EMA of the part named "model", checkpoints, metrics (`metrics.jsonl`, and the experiment trackers
of `log_with` when a stage has started them: `vltk.train.tracking`) and the progress bar.

`data(position)` must yield this process's share of each successive global batch, starting `position` samples into
a deterministic stream (`vltk.data.loader.ImageBatches` does); with `loader_workers` > 0 it is called as
`data(position, worker, workers)` in DataLoader processes (`vltk.data.loader.batches`). On a fresh start the loop
seeds every RNG with `seed + rank`; on resume it restores the weights, optimisers, EMA, RNG states and data position
of the newest checkpoint, so that on CPU a killed and resumed run ends with bitwise the same weights as an
uninterrupted one.
Tasks that draw their own noise key it by the step and each sample's place in the global batch
(`vltk.objectives.common.Draws`), which needs no checkpoint and is the same on any number of processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Protocol

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
from safetensors.torch import save_file
from torch import nn

from vltk.data import loader
from vltk.train.checkpoint import begin_checkpoint, commit_checkpoint, restore_checkpoint, save_rng, save_training_state
from vltk.train.ema import EMA, ema_decay_at
from vltk.train.launch import local_device
from vltk.train.optim import OptimConfig, build_optimizer, lr_at
from vltk.train.tracking import Tracker, accelerator_options, mark_restart
from vltk.ui import console, progress

METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    steps: int = 1000  # optimiser steps
    batch_size: int = 64  # global: over all processes and accumulation micro-batches
    grad_accum: int = 1  # micro-batches per optimiser step
    seed: int = 0
    log_every: int = 10  # steps between metrics.jsonl lines
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2
    ema_decay: float = 0.0  # 0 turns the EMA off
    # bf16 autocast. "auto": on a GPU, not on a CPU (a small model there gains nothing in bf16, and tests keep fp32's
    # numbers); "bf16": on the CPU too where it has native bf16 (AMX or AVX512-BF16; elsewhere fp32, said once), and
    # pays from ~256 wide or for convolutions (measure with `make bench`: benchmarks/bench_precision.py); "no": fp32.
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    compile: bool = False  # torch.compile the trained modules
    # DataLoader processes that build batches ahead of the step (caption draws, BPE-dropout, MixSel pairing,
    # collation); 0 builds them in the training process. The batches are the same either way.
    loader_workers: int = 0
    # Experiment trackers that also get the metrics lines, the config and the run's images (vltk.train.tracking):
    # "tensorboard", "wandb", "mlflow" or a list of them, each from its extra (pip install 'vltk[wandb]'). A single
    # name in a TOML file or --set is read as a list of one (vltk.config), so both spellings are the same run.
    log_with: tuple[Tracker, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.log_with, tuple):
            raise ValueError(f"log_with must be a tuple of tracker names, got {self.log_with!r}")
        known = typing.get_args(Tracker)
        if unknown := [name for name in self.log_with if name not in known]:
            raise ValueError(f"log_with: unknown tracker {unknown[0]!r} (choose from {', '.join(known)})")
        rules = [
            ("steps", self.steps >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("grad_accum", self.grad_accum >= 1, ">= 1"), ("log_every", self.log_every >= 1, ">= 1"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1"), ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("loader_workers", self.loader_workers >= 0, ">= 0"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")


@dataclasses.dataclass
class Part:
    """A trained module (as prepared: DDP-wrapped under several processes, compiled when asked) and its optimiser."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    optim: OptimConfig


class Task(Protocol):
    parts: dict[str, Part]

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        """Losses of one micro-batch, back-propagated with `accelerator.backward`; returns numbers to log."""
        ...


@dataclasses.dataclass
class TrainResult:
    steps: int  # optimiser steps done in total
    resumed_from: int  # the step this process started at (0 on a fresh run)
    seconds: float  # wall time of the steps this process ran
    ema: EMA | None
    metrics: dict[str, float]  # the last logged line


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16); elsewhere bf16 is emulated, slower than
    fp32."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def precision(requested: str, on_cpu: bool, key: str = "train.mixed_precision") -> Literal["no", "bf16"]:
    """accelerate's mixed_precision for a `mixed_precision` setting (the config `key`) on this device ("auto": bf16 on
    a GPU; "bf16" on a CPU without native bf16 runs fp32, saying so: the emulation would only be slower)."""
    if requested == "auto":
        return "no" if on_cpu else "bf16"
    if requested == "bf16" and on_cpu and not native_bf16_cpu():
        console().print(f"[yellow]{key} = bf16: this CPU has no native bf16 (AMX or AVX512-BF16), where bf16 runs "
                        "slower than fp32; running in fp32[/]")
        return "no"
    return requested  # type: ignore[return-value]


def make_accelerator(cfg: TrainConfig, cpu: bool = False, find_unused_parameters: bool = False) -> Accelerator:
    """The run's Accelerator: on the CPU when asked or when there is no GPU, in the precision `precision` resolves.

    `find_unused_parameters` is for models whose passes use different parameters (MAGVLT's length head is idle in a
    T2I step): DDP then marks the idle ones ready instead of waiting for their gradients forever. The trackers of
    `cfg.log_with` are set up here, so that a missing tracker package is refused before any work.
    """
    on_cpu = local_device(cpu).type == "cpu"
    mixed = precision(cfg.mixed_precision, on_cpu)
    if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        # accelerate keeps one precision per process and refuses another; a run in a new precision in the same Python
        # process (a notebook, the tests) starts its state afresh, keeping the process group (PartialState).
        AcceleratorState._reset_state()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(cpu=on_cpu, mixed_precision=mixed, gradient_accumulation_steps=cfg.grad_accum,
                       kwargs_handlers=handlers, **accelerator_options(cfg.log_with))


def prepare(
    accelerator: Accelerator, parts: dict[str, tuple[nn.Module, OptimConfig]], *, compile: bool = False,
) -> dict[str, Part]:
    """Build each module's AdamW and hand both to accelerate (device placement, DDP, autocast)."""
    prepared = {}
    for name, (module, optim) in parts.items():
        optimizer = build_optimizer(module, optim)
        if compile:
            module = torch.compile(module)
        module, optimizer = accelerator.prepare(module, optimizer)
        prepared[name] = Part(module=module, optimizer=optimizer, optim=optim)
    return prepared


def unwrap(accelerator: Accelerator, module: nn.Module) -> nn.Module:
    """The plain module under accelerate's DDP / autocast / compile wrappers (its state dict has the plain names)."""
    return accelerator.unwrap_model(module, keep_torch_compile=False)


def save_final_weights(accelerator: Accelerator, part: Part, ema: EMA | None, file: Path) -> nn.Module:
    """The trained module (plain, in eval mode) with the EMA weights when there are some, saved to `file` as
    safetensors; the published weights of a run."""
    model = unwrap(accelerator, part.module)
    if ema is not None:
        ema.copy_to(model)
    model.eval()
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}, str(file))
    return model


def split_batch(batch: Any, n: int) -> list[Any]:
    """`batch` (a tensor, or a dict / list / tuple of them) as `n` equal micro-batches along the first dimension."""
    if n == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % n:
            raise ValueError(f"a batch of {batch.shape[0]} does not split into {n} micro-batches")
        return list(batch.chunk(n))
    if isinstance(batch, dict):
        columns = {k: split_batch(v, n) for k, v in batch.items()}
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if isinstance(batch, (list, tuple)):
        if all(isinstance(v, torch.Tensor) for v in batch):
            columns = [split_batch(v, n) for v in batch]
            return [type(batch)(c[i] for c in columns) for i in range(n)]
        size = len(batch) // n
        return [batch[i * size:(i + 1) * size] for i in range(n)]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__}")


TOKENS = "tokens"  # a Task may report the tokens a micro-batch put through its model(s); the loop shows tokens/s


class Window:
    """Metrics of the steps since the last log line: each key's mean over the steps (and micro-batches) that had it,
    so per-task metrics of a task drawn in some steps only are still logged."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: dict[str, float]) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        """Means over the window and over processes (keys may differ between processes, e.g. per-rank task draws)."""
        keys = sorted(set(self.sums)) if accelerator.num_processes == 1 else sorted(set(gather_object(sorted(self.sums))))
        local = [[self.sums.get(k, 0.0), float(self.counts.get(k, 0))] for k in keys]
        totals = accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=accelerator.device).view(-1, 2),
                                    "sum")
        self.sums, self.counts = {}, {}
        return {k: s / c for k, (s, c) in zip(keys, totals.tolist()) if c > 0}


def _restart_metrics(file: Path, step: int) -> None:
    """Drop the lines a killed run logged after its last checkpoint (they are about to be logged again)."""
    if not file.is_file():
        return
    kept = [line for line in file.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    file.write_text("".join(line + "\n" for line in kept))


def train(
    task: Task, data: Callable[[int], Iterable[Any]], cfg: TrainConfig, *, accelerator: Accelerator, work: Path,
    label: str = "train",
) -> TrainResult:
    """Run `task` to `cfg.steps` optimiser steps, continuing from the newest checkpoint under `work` if there is one."""
    if cfg.batch_size % (accelerator.num_processes * cfg.grad_accum):
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {accelerator.num_processes} processes "
                         f"x {cfg.grad_accum} micro-batches")
    main, rank = accelerator.is_main_process, accelerator.process_index
    parts = task.parts
    modules = {name: unwrap(accelerator, part.module) for name, part in parts.items()}
    optimizers = {name: part.optimizer for name, part in parts.items()}
    ema = EMA(modules["model"]) if cfg.ema_decay > 0 else None
    root, metrics_file = Path(work) / CHECKPOINTS, Path(work) / METRICS

    start = 0
    say = (lambda text: console().print(f"[yellow]{text}[/]")) if main else (lambda text: None)
    restored = restore_checkpoint(root, modules=modules, optimizers=optimizers, ema=ema, rank=rank, say=say)
    if restored is not None:
        start = restored["step"]
        if main:
            console().print(f"[cyan]resuming[/] {label} from step {start} ({restored['path'].name})")
    else:
        set_seed(cfg.seed, device_specific=True)  # seed + rank: dropout and noise differ between processes
    if main:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        _restart_metrics(metrics_file, start)
        if start:
            mark_restart(accelerator, start)

    def checkpoint(step: int) -> None:
        stage = begin_checkpoint(root, step)
        save_rng(stage, rank)
        if main:
            save_training_state(stage, step=step, modules=modules, optimizers=optimizers, ema=ema,
                                extra={"position": step * cfg.batch_size})
        accelerator.wait_for_everyone()
        if main:
            commit_checkpoint(stage, cfg.keep_checkpoints)
        accelerator.wait_for_everyone()

    batches = iter(loader.batches(data, start * cfg.batch_size, cfg.loader_workers))
    bar = progress(label, cfg.steps - start, unit="step") if main else contextlib.nullcontext(lambda *a, **k: None)
    last: dict[str, float] = {}
    window = Window()
    tokens = 0.0  # put through the model(s) by all processes since `began`
    began = time.time()
    for part in parts.values():
        part.module.train()
    with bar as advance:
        for step in range(start, cfg.steps):
            stats: dict[str, float] = {}
            for micro in split_batch(next(batches), cfg.grad_accum):
                with accelerator.accumulate(*(part.module for part in parts.values())):
                    line = task.train_step(micro, step)
                tokens += line.pop(TOKENS, 0.0) * accelerator.num_processes
                window.add(line)
                for key, value in line.items():
                    stats[key] = stats.get(key, 0.0) + value / cfg.grad_accum
            for name, part in parts.items():
                lr = lr_at(step, part.optim, cfg.steps)
                for group in part.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0)
                if part.optim.grad_clip > 0:
                    norm = accelerator.clip_grad_norm_(part.module.parameters(), part.optim.grad_clip)
                    stats[f"grad_norm/{name}"] = float(norm)
                stats[f"lr/{name}"] = lr
                part.optimizer.step()
                part.optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(modules["model"], ema_decay_at(step, cfg.ema_decay))
            done = step + 1
            window.add({k: v for k, v in stats.items() if k.startswith(("grad_norm/", "lr/"))})
            if done % cfg.log_every == 0 or done == cfg.steps:
                seconds = time.time() - began
                last = {"step": done, **window.reduce(accelerator), "seconds": round(seconds, 3)}
                if tokens:
                    last["tokens_per_s"] = round(tokens / max(seconds, 1e-9), 1)
                if main:
                    with open(metrics_file, "a") as f:
                        f.write(json.dumps(last) + "\n")
                accelerator.log({k: v for k, v in last.items() if k != "step"}, step=done)  # no-op without trackers
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                checkpoint(done)
            info = [f"loss {stats['loss']:.4f}"] if "loss" in stats else []
            if tokens:
                info.append(f"{tokens / max(time.time() - began, 1e-9):,.0f} tok/s")
            advance(1, info=", ".join(info) or None)
    return TrainResult(steps=cfg.steps, resumed_from=start, seconds=time.time() - began, ema=ema, metrics=last)
