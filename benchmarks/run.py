"""Run every benchmark module and write their results, side by side, to one JSON file.

    python -m benchmarks.run --out build/bench/results.json [--only shard,bpe]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import pkgutil
import time
from pathlib import Path

import torch

import benchmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="", help="comma-separated benchmark names (module names without bench_)")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        },
        "results": {},
    }
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        name = info.name.removeprefix("bench_")
        if not info.name.startswith("bench_") or (only and name not in only):
            continue
        start = time.perf_counter()
        results["results"][name] = importlib.import_module(f"benchmarks.{info.name}").run()
        results["results"][name]["bench_seconds"] = round(time.perf_counter() - start, 2)
        print(f"{name}: {json.dumps(results['results'][name])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
