"""A generator's training run as the train-gen stages make it (MAGVLT / ARGVLT / GIVT in `vltk.pipeline.train_gen`,
UViM's stage II in `vltk.pipeline.train_uvim`): the shared loop under the trackers, then on the main process the final
weights, the learning curve (`loss.png`, logged as the run's one image) and the manifest's training record.

    fitted = fit(task, data, cfg.train, accelerator, job.work, weights=job.work / WEIGHTS, config=config_to_dict(cfg),
                 project="vltk-train-gen", run=out.name, label="train-gen (magvlt tiny)", title="magvlt tiny")
    record = fitted.record(("loss", "nll_per_dim"))   # main process: {"parameters", "train", "curve"}
    extra = {**record, "summary": summary("magvlt tiny", record)}   # "magvlt tiny (0.83M parameters), 2000 steps, ..."
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from accelerate import Accelerator
from torch import nn

from vltk.train.loop import METRICS, Task, TrainConfig, TrainResult, save_final_weights, train
from vltk.train.plot import plot_metrics
from vltk.train.tracking import log_image, tracking


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fitted:
    result: TrainResult
    model: nn.Module | None  # the final weights (the EMA's when there is one), in eval mode; None off the main process
    lines: list[dict[str, float]]  # metrics.jsonl; empty off the main process
    processes: int
    precision: str

    def record(self, curve_keys: Sequence[str]) -> dict[str, Any]:
        """{"parameters", "train": steps, timing, processes, precision and the last logged line, "curve": each of
        `curve_keys` that the log has, its first and last value}."""
        result, lines = self.result, self.lines
        ran = result.steps - result.resumed_from
        curve = {k: {"first": lines[0][k], "last": next(line[k] for line in reversed(lines) if k in line)}
                 for k in curve_keys if lines and k in lines[0]}
        return {"parameters": sum(p.numel() for p in self.model.parameters()),
                "train": {"steps": result.steps, "resumed_from": result.resumed_from,
                          "seconds": round(result.seconds, 1),
                          "steps_per_s": round(ran / max(result.seconds, 1e-9), 3),
                          "tokens_per_s": result.metrics.get("tokens_per_s"), "processes": self.processes,
                          "precision": self.precision, "final": result.metrics},
                "curve": curve}


def fit(task: Task, data: Any, cfg: TrainConfig, accelerator: Accelerator, work: Path, *, weights: Path,
        config: dict[str, Any], project: str, run: str, label: str, title: str) -> Fitted:
    """Train `task` (its model is `task.parts["model"]`) on `data` in the work folder `work`, the trackers on as
    `cfg.log_with` says; on the main process save the final weights to `weights` and plot the learning curve."""
    model, lines = None, []
    with tracking(accelerator, config, work, project=project, run=run):
        result = train(task, data, cfg, accelerator=accelerator, work=work, label=label)
        if accelerator.is_main_process:
            model = save_final_weights(accelerator, task.parts["model"], result.ema, weights)
            lines = [json.loads(line) for line in (work / METRICS).read_text().splitlines() if line]
            plot_metrics(lines, work / "loss.png", title=title)
            log_image(accelerator, work / "loss.png", result.steps)  # the run's one image: its learning curve
    return Fitted(result=result, model=model, lines=lines, processes=accelerator.num_processes,
                  precision=accelerator.mixed_precision)


def summary(name: str, record: dict[str, Any]) -> str:
    """The start of a generator manifest's one-line summary: size, steps and the loss's first and last values."""
    text = f"{name} ({record['parameters'] / 1e6:.2f}M parameters), {record['train']['steps']} steps"
    if "loss" in (curve := record["curve"]):
        text += f", loss {curve['loss']['first']:.3f} -> {curve['loss']['last']:.3f}"
    return text
