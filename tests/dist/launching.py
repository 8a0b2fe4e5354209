"""Running `python -m vltk ...` in one process or under `accelerate launch` with N CPU processes (gloo), as a user
would (accelerate's `--multi_gpu` with `--cpu` is what all-reduces on a CPU)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import Iterator

import torch

from tests.helpers import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_vltk(args: list[str], processes: int, precision: str = "no") -> None:
    """`vltk ARGS` in `processes` processes (one thread each); asserts it succeeded. One process is this one (the
    reference run: the same code without a launcher, and no interpreter to start); more are `accelerate launch`ed. The
    rendezvous port is free when picked but another test worker may bind it before the launch does: that one failure
    is retried on a new port."""
    if processes == 1:
        with torch_threads(1):
            run_cli(*args)
        return
    for attempt in range(2):
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                  "--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend", "no",
                  "--main_process_port", str(free_port())]
        proc = subprocess.run([*launch, "-m", "vltk", *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        if proc.returncode == 0 or "Address already in use" not in proc.stderr or attempt:
            break
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` for a block: the launched processes run one thread each."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
