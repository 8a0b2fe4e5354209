"""Experiment trackers (TensorBoard, Weights & Biases, MLflow) through accelerate's tracking; none is required.

    vltk train-gen ENCODED OUT --set train.log_with=tensorboard
    vltk tokenize image SHARDS OUT --set 'train.log_with=["tensorboard", "mlflow"]'

A tracked run logs each `metrics.jsonl` line at its step (every key but "step"), its resolved config as
hyper-parameters (flattened to dotted keys), and the images it publishes, under their file names, at the step they
show. Everything stays on this machine unless the user says otherwise: TensorBoard and MLflow (a file store, unless
MLFLOW_TRACKING_URI is set) write under the artifact's `trackers/` folder, wandb runs offline unless WANDB_MODE is set.
Only the main process logs: accelerate's trackers do nothing on the others.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from PIL import Image

from vltk.errors import VltkError

Tracker = Literal["tensorboard", "wandb", "mlflow"]
TRACKERS = "trackers"  # the artifact's folder for what the trackers write locally


def check_trackers(names: Sequence[str]) -> None:
    """Refuse a tracker whose package is missing, before any work: accelerate would silently drop it."""
    for name in names:
        if importlib.util.find_spec(name) is None:  # each tracker's module is named as the tracker
            raise VltkError(f"train.log_with = {name} needs the {name} package: pip install 'vltk[{name}]'")


def accelerator_options(names: Sequence[str]) -> dict[str, Any]:
    """Accelerator(**options) for the trackers `names` (none: no options)."""
    if not names:
        return {}
    check_trackers(names)
    # accelerate wants TensorBoard's folder when the Accelerator is made, but the artifact's work folder is known only
    # once the job begins (which needs the Accelerator); `tracking` sets the real one before the trackers start.
    return {"log_with": list(names), "project_config": ProjectConfiguration(logging_dir=TRACKERS)}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The nested config as {"train.steps": 6, ...}: trackers take scalar hyper-parameters only, so lists and None are
    written as JSON text (TensorBoard would drop a None)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def _init_kwargs(names: Sequence[str], folder: Path, run: str) -> dict[str, dict[str, Any]]:
    """Each tracker's start options: local and offline unless the user's environment says otherwise."""
    kwargs: dict[str, dict[str, Any]] = {}
    if "wandb" in names:
        offline = {} if "WANDB_MODE" in os.environ else {"mode": "offline"}
        kwargs["wandb"] = {"dir": str(folder), "name": run, **offline}
    if "mlflow" in names:
        kwargs["mlflow"] = {"run_name": run}
        if "MLFLOW_TRACKING_URI" not in os.environ:
            import mlflow  # checked by check_trackers

            mlflow.set_tracking_uri((folder / "mlruns").as_uri())
    return kwargs


@contextlib.contextmanager
def tracking(accelerator: Accelerator, config: dict[str, Any], work: Path, project: str, run: str) -> Iterator[None]:
    """The Accelerator's trackers, started under `work` with `config` as hyper-parameters and ended on the way out
    (a failed run included, so that no writer is left open); nothing when the run has none."""
    names = [str(tracker) for tracker in accelerator.log_with]
    if not names:
        yield
        return
    folder = Path(work) / TRACKERS
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.project_configuration.logging_dir = str(folder)
    accelerator.init_trackers(project, config=flatten(config), init_kwargs=_init_kwargs(names, folder, run))
    try:
        yield
    finally:
        # Not accelerator.end_training(): it also destroys the process group, which the stage still needs after this.
        for tracker in accelerator.trackers:
            tracker.finish()  # main process only (accelerate's trackers are on_main_process)


def mark_restart(accelerator: Accelerator, step: int) -> None:
    """A run resumed from its checkpoint at `step` logs again the steps after it: TensorBoard is told to drop what the
    killed run logged after `step` (as `metrics.jsonl` drops those lines). wandb and MLflow start a new run on
    resume."""
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog

            # What SummaryWriter(purge_step=step + 1) writes: TensorBoard discards the events from that step on.
            start = Event(step=step + 1, session_log=SessionLog(status=SessionLog.START))
            tracker.writer.file_writer.add_event(start)


def log_image(accelerator: Accelerator, file: Path, step: int) -> None:
    """The PNG `file` as an image tagged with its file name, at `step`, in each tracker (MLflow: as a run artifact)."""
    if not accelerator.is_main_process or not accelerator.trackers:
        return
    with Image.open(file) as png:
        pixels = np.asarray(png.convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(Path(file).name, pixels, step, dataformats="HWC")
            tracker.writer.flush()
        elif tracker.name == "wandb":
            tracker.log_images({Path(file).name: [pixels]}, step=step)
        elif tracker.name == "mlflow":
            tracker.log_artifact(str(file), artifact_path="images")
