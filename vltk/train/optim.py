"""The optimiser config, AdamW with decay on matrices only, and the learning-rate schedule as a pure function.

    cfg = OptimConfig(lr=3e-4, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1)
    optimizer = build_optimizer(model, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg, total_steps) * group["lr_mult"]

The schedule holds no state: the learning rate of a step is a function of the step alone, so a resumed run needs only
the step to continue it exactly (nothing to checkpoint beyond the step).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Literal

import torch
from torch import nn


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = 3e-4  # peak learning rate, independent of the number of processes (the batch is global)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0  # decoupled (AdamW), scaled by the scheduled lr as torch does
    # What decays: "matrices" = every parameter of rank >= 2 (nanoGPT); "kernels" = the weights of Linear and Conv
    # layers only, not embedding or position tables (big_vision's default `wd_mults`, big_vision/optax.py).
    decay: Literal["matrices", "kernels"] = "matrices"
    eps: float = 1e-8
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    # Per-parameter lr multipliers, big_vision's `lr_mults` (configs/proj/givt/givt_nyu_depth.py): a parameter's lr is
    # the schedule's times the value of the first fnmatch pattern its name (module.named_parameters) matches, else 1.
    lr_mults: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        rules = [
            ("lr", self.lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"), ("eps", self.eps > 0, "> 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"), ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0 = off)"),
            ("betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "two values in [0, 1)"),
            ("decay", self.decay in ("matrices", "kernels"), "'matrices' or 'kernels'"),
            ("lr_mults", all(m >= 0 for m in self.lr_mults.values()), "multipliers >= 0"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate of optimiser step `step` (0-based) of `total_steps`: linear warm-up, then cosine or constant."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


KERNEL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def decayed(module: nn.Module, decay: str) -> set[int]:
    """ids of the parameters that weight decay hits under the rule `decay` (OptimConfig.decay)."""
    if decay == "matrices":
        return {id(p) for p in module.parameters() if p.ndim >= 2}
    return {id(m.weight) for m in module.modules() if isinstance(m, KERNEL_LAYERS)}


def lr_mult(name: str, mults: dict[str, float]) -> float:
    """The lr multiplier of parameter `name`: the first matching pattern's value of `mults`, else 1."""
    return next((m for pattern, m in mults.items() if fnmatch.fnmatchcase(name, pattern)), 1.0)


def build_optimizer(module: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `module`'s trainable parameters; only those `cfg.decay` names are decayed (never biases or norms).
    Each group carries its "lr_mult" (`cfg.lr_mults`), which the training loop applies to the scheduled lr."""
    hit = decayed(module, cfg.decay)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in hit, lr_mult(name, cfg.lr_mults)), []).append(p)
    order = sorted(groups, key=lambda key: (not key[0], -key[1]))  # decayed first, as before lr_mults
    return torch.optim.AdamW([{"params": groups[key], "weight_decay": cfg.weight_decay if key[0] else 0.0,
                               "lr_mult": key[1]} for key in order], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
