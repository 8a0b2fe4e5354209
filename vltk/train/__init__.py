"""The shared training loop (tokenizers and generators): configs, optimiser schedule, EMA, checkpoints."""

from vltk.train.ema import EMA, ema_decay_at
from vltk.train.loop import Part, Task, TrainConfig, TrainResult, make_accelerator, prepare, save_final_weights, train, unwrap
from vltk.train.optim import OptimConfig, build_optimizer, lr_at

__all__ = [
    "EMA", "OptimConfig", "Part", "Task", "TrainConfig", "TrainResult", "build_optimizer", "ema_decay_at", "lr_at",
    "make_accelerator", "prepare", "save_final_weights", "train", "unwrap",
]
