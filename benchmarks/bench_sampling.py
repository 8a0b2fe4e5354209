"""Sampling speed: MAGVLT's parallel decoding against ARGVLT's KV-cache decoding, same size, same batch, each plain
and with classifier-free guidance.

    python -m benchmarks.run --out build/bench/results.json --only sampling

T2I: MAGVLT runs T = 10 full forward passes (MAGVLT §4.1), ARGVLT N sequential steps through its KV cache (the official
feat/eval sampling.py); the paper reports MAGVLT 8.12x faster at 256 image tokens on a GPU (MAGVLT Tab. 9). I2T:
MAGVLT runs a length pass and T = 12 iterations (MAGVLT §4.1); ARGVLT is forced to its worst case of C steps (an EOS id
no token equals, so no row stops; an untrained model rarely draws its EOS anyway). Both models are untrained and built
from the same config (dropout 0): speed does not depend on the weights. Rates are images or captions per second;
`magvlt_over_argvlt` above 1 means MAGVLT is faster. The four samplers of a task (MAGVLT and ARGVLT, plain and guided)
are timed in interleaved rounds (the median round each; `round_spread` says how much the rounds disagreed), after one
untimed warm-up call.

On a CPU the demo's size and the paper's sequence length (a one-layer trunk of the base width) run in fp32 at batch 1
and 16, with caption-like text lengths. `trunk_token_positions` gives each sampler's work per sample (I2T: an upper
bound, the predicted length sets MAGVLT's columns): MAGVLT's T passes over the whole sequence cost about T times the
positions of ARGVLT's single pass. A CPU is compute-bound once a batch fills its vector units, so there
the ratio tends to 1 / that work ratio as the batch grows; the paper's 8.12x comes from a GPU, where ARGVLT's
single-token steps are latency-bound. ARGVLT's thousands of tiny ops suffer most when other processes load the cores
(each threaded op waits for a descheduled thread): on a busy machine run with OMP_NUM_THREADS=1. On a GPU the paper's
base size (1024 wide, 24 layers, 16x16 grid, 64 text tokens, full vocabularies) runs under bf16 autocast.

Guided (classifier-free guidance, Ho & Salimans 2022; w = 3, constant), each sampler runs its passes over 2B rows:
MAGVLT one pass of the B conditional and B null-condition rows per step (as Muse does), ARGVLT one KV cache of 2B rows
(as LlamaGen, Sun et al. 2024, does); the plain paths (w = 0) run no 2B rows, i.e. the samplers as they were.
`guided_cost` is a sampler's guided time over its plain time. Guidance doubles the trunk work
(`trunk_token_positions`), so the cost is about 2 where a sampler is compute-bound and nearer 1 where it is
latency-bound (small batches; ARGVLT's single-token steps), and guided `magvlt_over_argvlt` is the plain one times
ARGVLT's cost over MAGVLT's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import torch

from benchmarks.bench_generators import GPU_SIZES, Size, Timing, bench_device, build_magvlt, time_paths
from vltk.masking import prefix_mask
from vltk.models.argvlt import ARGVLT, ARGVLTConfig
from vltk.sampling import argvlt as ar
from vltk.sampling import magvlt as mask

# The demo's size and the paper's sequence length (16 x 16 image tokens, 64 text tokens, full vocabularies) on a
# shallow base-width trunk, each at batch 1 (latency) and 16 (throughput).
DEMO = Size(width=128, depth=4, heads=4, grid=8, text_tokens=32, image_vocab=512, text_vocab=1024, batch=1)
PAPER_LENGTH = Size(width=1024, depth=1, heads=8, grid=16, text_tokens=64, image_vocab=16384, text_vocab=49408, batch=1)
CPU_SIZES = {f"{name}_b{batch}": dataclasses.replace(size, batch=batch)
             for name, size in (("demo_w128_d4", DEMO), ("paper_length_w1024_d1", PAPER_LENGTH)) for batch in (1, 16)}
CAPTION_TOKENS = (8, 20)  # caption lengths drawn per row, EOS included: COCO captions are ~10-20 CLIP BPE tokens
# A generation call is long, so a round is one call per sampler.
CPU_TIMING, GPU_TIMING = Timing(warmup=1, rounds=3, steps=1), Timing(warmup=1, rounds=3, steps=1)
GUIDANCE = 3.0  # the guided paths' w: in the issue's probe (make demo's recipe) accuracy rose up to s = w + 1 ~ 4-6
MODELS, KINDS = ("magvlt", "argvlt"), ("unguided", "guided")


def build_argvlt(size: Size) -> ARGVLT:
    return ARGVLT(ARGVLTConfig(width=size.width, depth=size.depth, heads=size.heads, dropout=0.0, attn_dropout=0.0,
                               image_vocab=size.image_vocab, text_vocab=size.text_vocab, image_tokens=size.grid**2,
                               text_tokens=size.text_tokens))


def inputs(size: Size, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C) EOS-padded captions of caption-like lengths (B,) (EOS included) and (B, N) codes, drawn at random."""
    g = torch.Generator().manual_seed(0)
    b, c, eos = size.batch, size.text_tokens, size.text_vocab - 1
    text_len = torch.randint(CAPTION_TOKENS[0], min(CAPTION_TOKENS[1], c) + 1, (b,), generator=g)
    text = torch.randint(eos, (b, c), generator=g).where(prefix_mask(text_len - 1, c), eos)
    image = torch.randint(size.image_vocab, (b, size.grid**2), generator=g)
    return text.to(device), text_len.to(device), image.to(device)


def bench_size(size: Size, device: torch.device, timing: Timing, amp: torch.dtype | None) -> dict:
    torch.manual_seed(0)
    magvlt, argvlt = build_magvlt(size).to(device).eval(), build_argvlt(size).to(device).eval()
    text, text_len, image = inputs(size, device)
    g = torch.Generator(device).manual_seed(0)
    eos, never = size.text_vocab - 1, -1  # `never`: no row of ARGVLT stops early (its worst case, C steps)
    configs = {"unguided": (mask.MAGVLTSampling(), ar.ARGVLTSampling()),
               "guided": (mask.MAGVLTSampling(guidance=GUIDANCE), ar.ARGVLTSampling(guidance=GUIDANCE))}
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with autocast():
                fn()
        return run

    def samplers(task: str, mask_cfg: mask.MAGVLTSampling, ar_cfg: ar.ARGVLTSampling) -> dict[str, Callable]:
        """The MAGVLT and ARGVLT sampler of `task` with these configs, as untimed calls."""
        if task == "t2i":
            return {"magvlt": call(lambda: mask.generate_images(magvlt, text, text_len, mask_cfg, g)),
                    "argvlt": call(lambda: ar.generate_images(argvlt, text, ar_cfg, g))}
        return {"magvlt": call(lambda: mask.generate_text(magvlt, image, mask_cfg, g, eos_id=eos)),
                "argvlt": call(lambda: ar.generate_text(argvlt, image, ar_cfg, g, eos_id=never))}

    plain = configs["unguided"][0]
    units = {"t2i": "images_per_s", "i2t": "captions_per_s"}
    steps = {"t2i": {"magvlt": plain.image_steps, "argvlt": size.grid**2},
             "i2t": {"magvlt": plain.text_steps, "argvlt": size.text_tokens}}
    # Trunk work per sample in token-positions (each costs ~24 width^2 FLOPs + attention): MAGVLT's passes each run
    # the whole sequence (pad columns dropped), ARGVLT runs every position once (prefix block + cached steps).
    # Guided, every pass or cache step runs twice the rows (MAGVLT's I2T length pass excepted: conditional only).
    n, c, longest = size.grid**2, size.text_tokens, int(text_len.max())
    work = {"t2i": {"magvlt": plain.image_steps * (4 + n + longest), "argvlt": 2 + c + n},
            "i2t": {"magvlt": (4 + n + c) + plain.text_steps * (4 + n + c), "argvlt": 2 + n + c}}
    guided_work = {"t2i": {"magvlt": 2 * work["t2i"]["magvlt"], "argvlt": 2 * work["t2i"]["argvlt"]},
                   "i2t": {"magvlt": (4 + n + c) + 2 * plain.text_steps * (4 + n + c), "argvlt": 2 * (2 + n + c)}}
    result: dict = {"size": dataclasses.asdict(size), "guidance": GUIDANCE}
    for task, unit in units.items():
        paths = {f"{model}_{kind}": fn for kind in KINDS for model, fn in samplers(task, *configs[kind]).items()}
        timed = time_paths(paths, timing, sync, catch=False)
        rate = {name: size.batch / t["step_s"] for name, t in timed.items()}
        positions = {"unguided": work[task], "guided": guided_work[task]}
        result[task] = {
            unit: {kind: {model: round(rate[f"{model}_{kind}"], 2) for model in MODELS} for kind in KINDS},
            "magvlt_over_argvlt": {kind: round(rate[f"magvlt_{kind}"] / rate[f"argvlt_{kind}"], 3) for kind in KINDS},
            "guided_cost": {model: round(rate[f"{model}_unguided"] / rate[f"{model}_guided"], 2) for model in MODELS},
            "steps": steps[task],
            "trunk_token_positions": {kind: {**positions[kind], "magvlt_over_argvlt": round(
                positions[kind]["magvlt"] / positions[kind]["argvlt"], 2)} for kind in KINDS},
            "round_spread": {name: t["spread"] for name, t in timed.items()},
        }
    return result


def run(device: str | None = None) -> dict:
    dev, sizes, timing, header = bench_device(device, (CPU_SIZES, CPU_TIMING), (GPU_SIZES, GPU_TIMING))
    on_gpu = dev.type == "cuda"
    results = {
        **header,
        "ratio_meaning": "MAGVLT rate / ARGVLT rate (above 1: MAGVLT is faster), unguided and guided (w = "
                         f"{GUIDANCE}); paper: 8.12 for T2I at 256 tokens, unguided",
        "guided_cost_meaning": "guided time / unguided time of the same sampler (2B rows: ~2 when compute-bound)",
        "steps_meaning": "MAGVLT: forward passes (I2T adds a length pass); ARGVLT: cache steps (I2T forced to C)",
    }
    for name, size in sizes.items():
        results[name] = bench_size(size, dev, timing, torch.bfloat16 if on_gpu else None)
    return results


if __name__ == "__main__":
    print(run())
