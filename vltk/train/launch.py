"""A stage's artifact job in a distributed launch: the main process begins it, the others write into it.

Only the main process may take the output's lock and decide whether there is work (a second writer would be refused,
and two processes clearing one `.partial/` would race). It tells the others what it decided, error included, so that
no process waits at a barrier for one that has already failed. Beside it, what the distributed stages share: the main
process's progress bar (`main_progress`), each process's contiguous part of a list of work (`share`), and the one
rule for the device of a process (`local_device`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from vltk import artifacts
from vltk.errors import VltkError
from vltk.ui import progress


def local_device(cpu: bool = False) -> torch.device:
    """Where a one-process stage, the training loop and the Python API run: the GPU when there is one, unless `cpu`
    (the choice accelerate's PartialState makes for each process of the distributed stages)."""
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


def begin_shared(state: PartialState, out: Path, *, stage: str, config: Any, inputs: dict[str, Path],
                 force: bool = False, resume: bool = False) -> artifacts.Job | None:
    """`artifacts.begin` on the main process; the same job (or None: up to date) on every other one."""
    job, message = None, [None, False]  # [error text, started]
    if state.is_main_process:
        try:
            job = artifacts.begin(out, stage=stage, config=config, inputs=inputs, force=force, resume=resume)
            message = [None, job is not None]
        except VltkError as err:
            message = [str(err), False]
    if state.num_processes > 1:
        broadcast_object_list(message)
    error, started = message
    if error is not None:
        raise VltkError(error)
    if not started:
        return None
    return job or artifacts.follow(out, stage=stage, config=config, inputs=inputs, resume=resume)


def main_progress(state: PartialState, label: str, total: int | None, unit: str
                  ) -> ContextManager[Callable[..., None]]:
    """Process 0's progress bar (labelled with its place when there are several); the other processes count silently."""
    if not state.is_main_process:
        return contextlib.nullcontext(lambda *args, **kwargs: None)
    if state.num_processes > 1:
        label += f" (process 0 of {state.num_processes})"
    return progress(label, total, unit=unit)


def share(state: PartialState, count: int) -> range:
    """This process's contiguous part of `count` items, as accelerate's split_between_processes cuts them (the first
    processes take one more when the count does not divide): the parts in process order are range(count), the order
    in which `gather_object` joins what the processes return."""
    with state.split_between_processes(list(range(count))) as mine:
        return range(mine[0], mine[-1] + 1) if mine else range(0)
