"""`vltk sample` and `vltk score` in one process against two under `accelerate launch` (CPU, gloo), on the demo.

    python -m benchmarks.run --out build/bench/results.json --only processes

The demo's MAGVLT (build/demo/gen: run `make demo` first) draws T2I samples for 256 val captions with the demo's
sampler (guidance w = 2, one candidate) in one process with all the machine's threads, then in two processes with
half the threads each; the two artifacts must hold the same files. Scoring (the judge over the 256 images) is timed
the same way. Wall times include each command's start-up (importing torch, loading the model), as a user meets them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT / "build" / "demo" / "gen"


def timed(args: list[str], processes: int) -> float:
    threads = max(torch.get_num_threads() // processes, 1)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              "29517"] if processes > 1 else [sys.executable]
    start = time.perf_counter()
    subprocess.run([*launch, "-m", "vltk", *args], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - start


def same_files(a: Path, b: Path) -> bool:
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")  # noqa: E731
                          if p.is_file() and p.name != "manifest.json"}
    return files(a) == files(b)


def run() -> dict:
    if not (GEN / "manifest.json").is_file():
        return {"unavailable": "run make demo first (this benchmark samples with build/demo/gen)"}
    result: dict = {"threads": torch.get_num_threads(), "count": 256}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in (1, 2):
            result[f"sample_s_{n}_process"] = round(timed(
                ["sample", str(GEN), str(root / f"samples-{n}"), "--config", str(ROOT / "stages/demo/sample_t2i.toml"),
                 "--cpu", "--set", "candidates=1", "--set", "count=256"], n), 1)
            result[f"score_s_{n}_process"] = round(timed(
                ["score", str(root / f"samples-{n}"), str(root / f"scores-{n}"), "--cpu", "--set", "meteor=false"],
                n), 1)
        result["same_files"] = same_files(root / "samples-1", root / "samples-2")
    for stage in ("sample", "score"):
        result[f"{stage}_speedup_2_vs_1"] = round(result[f"{stage}_s_1_process"] / result[f"{stage}_s_2_process"], 2)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
