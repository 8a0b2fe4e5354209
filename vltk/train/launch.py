"""A stage's artifact job in a distributed launch: the main process begins it, the others write into it.

Only the main process may take the output's lock and decide whether there is work (a second writer would be refused,
and two processes clearing one `.partial/` would race). It tells the others what it decided, error included, so that
no process waits at a barrier for one that has already failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from vltk import artifacts
from vltk.errors import VltkError


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
