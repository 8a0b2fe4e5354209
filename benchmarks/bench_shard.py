"""Shard throughput: images/s of `vltk shard` on a folder of generated 640x480 JPEGs, to 256 px JPEG and PNG.

    python -m benchmarks.run --out build/bench/results.json --only shard

Wall time of the whole stage (source scan, starting the workers, decode/resize/encode, tar writing), measured side by
side in one process after a warm-up run: 2 workers for JPEG and PNG output, and 1 worker for JPEG to show what the
second process buys.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vltk.pipeline import shard as stage

IMAGES = 300
WIDTH, HEIGHT = 640, 480


def make_source(root: Path, count: int, seed: int = 0) -> None:
    """Photo-like JPEGs: smooth colour fields (upsampled noise) plus fine grain, each with two captions."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        coarse = coarse.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        grain = rng.normal(0, 12, (HEIGHT, WIDTH, 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i:05d}.jpg", quality=90)
        (root / f"{i:05d}.txt").write_text(f"generated picture number {i}\na second caption for {i}\n")


def throughput(src: Path, out: Path, cfg: stage.ShardConfig, workers: int) -> float:
    start = time.perf_counter()
    stage.run(cfg, src, out, workers=workers)
    return round(IMAGES / (time.perf_counter() - start), 1)


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        make_source(src, IMAGES)
        jpeg = stage.ShardConfig(size=256, image_format="jpeg")
        # Warm-up: fills the file cache (and starts multiprocessing's fork server where fork is not used).
        stage.run(stage.ShardConfig(size=256, format="folder"), src, Path(tmp) / "warmup", workers=2)
        png = stage.ShardConfig(size=256, image_format="png")
        results = {
            "images": IMAGES,
            "source": f"{WIDTH}x{HEIGHT} JPEG",
            "jpeg256_2workers_img_per_s": throughput(src, Path(tmp) / "jpeg2", jpeg, workers=2),
            "png256_2workers_img_per_s": throughput(src, Path(tmp) / "png2", png, workers=2),
            "jpeg256_1worker_img_per_s": throughput(src, Path(tmp) / "jpeg1", jpeg, workers=1),
        }
    results["speedup_2_vs_1_workers"] = round(results["jpeg256_2workers_img_per_s"]
                                              / results["jpeg256_1worker_img_per_s"], 2)
    return results


if __name__ == "__main__":
    print(run())
