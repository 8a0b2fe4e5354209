"""bf16 autocast against fp32 on this machine: raw matmul, and one training step of each demo-sized model vltk trains.

    python -m benchmarks.run --out build/bench/results.json --only precision

Whether bf16 pays on a CPU depends on the CPU (AMX-BF16 tiles, AVX512-BF16 dot products, or neither) and on the
model's width: small matmuls are bound by memory and by autocast's casts, not by arithmetic. So the choice of
`train.mixed_precision` per stage is measured here, not assumed. Each model trains one step the way the training
loop runs it under accelerate (`torch.autocast(device, bfloat16)` around forward and loss, fp32 weights, backward and
AdamW outside): the demo VQ-GAN (stages/demo/tokenize_image.toml: its pixel loss and quantizer terms, no GAN, as the
demo trains it) and MAGVLT's T2I step at the demo size and two wider ones (benchmarks.bench_generators' batch,
loss and step). fp32 and bf16 paths alternate in the same rounds (each path's median round), so other load falls on
both alike; `bf16_speedup` = fp32 step time / bf16 step time (above 1: bf16 is faster). Matmul is square, n x n @ n x n,
reported in GFLOP/s (2 n^3 per product).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.bench_generators import (
    Size, Timing, build_magvlt, magvlt_loss, make_batch, make_step, time_paths,
)
from vltk.config import load_config
from vltk.imagetok import build_image_tokenizer
from vltk.imagetok.losses import pixel_loss
from vltk.pipeline.tokenize_image import TokenizeImageConfig
from vltk.train.loop import native_bf16_cpu

DEMO = Path(__file__).resolve().parents[1] / "stages" / "demo"
MATMUL_SIZES = (512, 1024, 2048)
MAGVLT_SIZES = {
    "magvlt_w128_d4": Size(width=128, depth=4, heads=4, grid=8, text_tokens=32, image_vocab=512, text_vocab=1024,
                           batch=32),  # the demo's tiny MAGVLT
    "magvlt_w256_d4": Size(width=256, depth=4, heads=4, grid=8, text_tokens=32, image_vocab=512, text_vocab=1024,
                           batch=32),
    "magvlt_w512_d8_grid16": Size(width=512, depth=8, heads=8, grid=16, text_tokens=32, image_vocab=1024,
                                  text_vocab=1024, batch=16),
}
TIMING = Timing(warmup=2, rounds=5, steps=3)
VQGAN_BATCH, VQGAN_IMAGE = 32, 32  # the demo's batch and image size


def autocasts(device: torch.device) -> dict[str, Callable[[], contextlib.AbstractContextManager]]:
    return {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast(device.type, dtype=torch.bfloat16)}


def matmul_rates(device: torch.device, sync: Callable[[], None]) -> dict[str, dict[str, float]]:
    """GFLOP/s of an n x n product in fp32 and in bf16 (inputs already bf16: the hardware's rate, no casts)."""
    rates: dict[str, dict[str, float]] = {}
    for n in MATMUL_SIZES:
        a = torch.randn(n, n, device=device)
        steps = {"fp32": (lambda a=a: a @ a), "bf16": (lambda b=a.bfloat16(): b @ b)}
        timed = time_paths(steps, TIMING, sync, catch=False)
        rates[str(n)] = {k: round(2 * n**3 / t["step_s"] / 1e9, 1) for k, t in timed.items()}
    return rates


def vqgan_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return pixel_loss(x, out.recon.float(), "l1") + sum(out.loss_terms.values())


def compare(build: Callable[[], nn.Module], loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any,
            device: torch.device, sync: Callable[[], None]) -> dict:
    """Step time in fp32 and bf16 (each path its own copy of the same initial model, AdamW) and the speedup."""
    steps = {}
    for name, autocast in autocasts(device).items():
        torch.manual_seed(0)
        model = build().to(device)
        steps[name] = make_step(model, torch.optim.AdamW(model.parameters(), lr=1e-4), loss_fn, batch, autocast)
    timed = time_paths(steps, TIMING, sync, catch=False)
    return {"step_s": {k: round(t["step_s"], 4) for k, t in timed.items()},
            "round_spread": {k: t["spread"] for k, t in timed.items()},
            "bf16_speedup": round(timed["fp32"]["step_s"] / timed["bf16"]["step_s"], 3)}


def run(device: str | None = None) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    results: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda"
                     else f"cpu ({torch.get_num_threads()} threads)", "timing": dataclasses.asdict(TIMING),
                     "native_bf16_cpu": native_bf16_cpu(),  # what train.mixed_precision = "bf16" checks
                     "matmul_gflops": matmul_rates(dev, sync)}
    cfg = load_config(TokenizeImageConfig, DEMO / "tokenize_image.toml")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=VQGAN_IMAGE))
    x = torch.rand(VQGAN_BATCH, 3, VQGAN_IMAGE, VQGAN_IMAGE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results["vqgan_demo"] = compare(lambda: build_image_tokenizer(cfg.model), vqgan_loss, x.to(dev), dev, sync)
    for name, size in MAGVLT_SIZES.items():
        results[name] = compare(lambda size=size: build_magvlt(size), magvlt_loss, make_batch(size, dev), dev, sync)
        results[name]["size"] = dataclasses.asdict(size)
    return results


if __name__ == "__main__":
    print(run())
