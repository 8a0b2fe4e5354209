"""Generator training throughput: vltk's MAGVLT against an x-transformers encoder of the same size, eager and compiled.

    python -m benchmarks.run --out build/bench/results.json --only generators

Both models train on the same batch in the same process: a T2I layout [BOC, BOT, text(C), BOG, BOI, image(N)] with
half of each row's image tokens masked, the same token ids (x-transformers' vocabulary is MAGVLT's image rows, text
rows and special ids, MAGVLT's image-mask id standing in for the masked codes), the same (B, L, L) attention mask
(text padding blocked), dropout 0, AdamW. One step = forward, CE over the masked image tokens, backward, AdamW step;
tokens/s counts batch x sequence length. Sizes match: width, depth, heads, MLP ratio 4, vocabulary, sequence length;
both attend through `scaled_dot_product_attention` (x-transformers with `attn_flash=True`).

Three paths per size and mode:
- magvlt: vltk's forward, which computes the MLM head's image logits at the masked positions only;
- x_transformers_masked_logits: the same work in x-transformers (`return_embeddings=True`, then its own `to_logits`,
  a Linear to the image vocabulary, at the masked positions only); `ratio_equal_work` = magvlt / this;
- x_transformers_all_logits: x-transformers' natural path (logits at every position, CE on the masked ones);
  `ratio_all_logits` = magvlt / this.
A ratio above 1 means vltk trains faster. Paths are timed in interleaved rounds (the median round per path), so that
load from other processes falls on all of them alike, and `round_spread` says how much the rounds disagreed; warm-up
steps, and the first compile, are not timed. Under compile, each path's forward + loss is one
`torch.compile(dynamic=False)` function (the backward goes through AOTAutograd; the boolean selection of the masked
positions is a graph break in every path); a compile failure is recorded as its error string. `first_step_s` of a
compiled path is shorter when inductor's on-disk cache already holds its kernels.

On a CPU two small sizes run in fp32, the first also compiled (2-3 minutes on 2 cores, most of it compiling). With a
GPU the size is the paper's base (1024 wide,
24 layers, 8 heads, 16x16 grid + 64 text, vocabulary 16384 + 49408, batch 32) under bf16 autocast, and MFU =
6 x parameters x tokens/s / the device's dense bf16 peak (null, with a note, for a device not in the table).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from x_transformers import Encoder, TransformerWrapper

from vltk.masking import prefix_mask, random_subset
from vltk.models.magvlt import (
    BOG, MAGVLT, MASK_IMAGE, MIXSEL_SPECIALS, Inputs, MAGVLTConfig, attention_mask, slots, structural_tokens,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Size:
    width: int
    depth: int
    heads: int
    grid: int  # image tokens = grid ** 2
    text_tokens: int
    image_vocab: int
    text_vocab: int
    batch: int

    @property
    def sequence_length(self) -> int:
        return 4 + self.grid**2 + self.text_tokens


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    warmup: int  # untimed steps per path (the first one compiles)
    rounds: int  # interleaved timed rounds; a path's time is its median round
    steps: int  # steps per path per round


CPU_SIZES = {
    "w256_d4": Size(width=256, depth=4, heads=4, grid=8, text_tokens=32, image_vocab=1024, text_vocab=4096, batch=32),
    "w128_d4": Size(width=128, depth=4, heads=4, grid=8, text_tokens=32, image_vocab=512, text_vocab=1024, batch=32),
}
GPU_SIZES = {
    "base": Size(width=1024, depth=24, heads=8, grid=16, text_tokens=64, image_vocab=16384, text_vocab=49408,
                 batch=32),
}
# On a CPU only the first size is also compiled: a path's first compile takes 20-45 s on 2 cores.
CPU_COMPILED = ("w256_d4",)
CPU_TIMING, GPU_TIMING = Timing(warmup=2, rounds=5, steps=2), Timing(warmup=3, rounds=5, steps=10)
# Dense bf16 peak FLOP/s by device name (vendor data sheets), matched in order, so "H100 PCIe" before "H100".
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


@dataclasses.dataclass
class Batch:
    """One T2I batch as each model reads it."""

    inputs: Inputs  # MAGVLT's view; inputs.image_masked (B, N) marks the masked image tokens
    ids: torch.Tensor  # (B, L) x-transformers' ids in the same layout
    attn_mask: torch.Tensor  # (B, 1, L, L) bool, True = may attend (MAGVLT's mask; x-transformers reads 4-d masks)
    image: slice  # the image positions in the sequence
    targets: torch.Tensor  # (M,) the codes at the masked positions, row-major


def make_batch(size: Size, device: torch.device, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b, n, c = size.batch, size.grid**2, size.text_tokens
    eos = size.text_vocab - 1  # any id works as EOS here: the model does not treat it specially
    image = torch.randint(size.image_vocab, (b, n), generator=g)
    text_len = torch.randint(c // 2, c + 1, (b,), generator=g)  # EOS included
    text = torch.randint(eos, (b, c), generator=g).where(prefix_mask(text_len - 1, c), eos)  # EOS-padded rows
    masked = random_subset(torch.ones(b, n, dtype=torch.bool), torch.full((b,), n // 2), torch.rand(b, n, generator=g))
    inputs = Inputs(layout="t2i", image=image, image_masked=masked, text=text,
                    text_masked=torch.zeros(b, c, dtype=torch.bool), text_len=text_len)
    s = slots("t2i", n, c)
    special = size.image_vocab + size.text_vocab  # x-transformers' rows: image codes, text ids, then special ids
    ids = torch.empty(b, size.sequence_length, dtype=torch.long)
    ids[:, list(s.structural)] = special + structural_tokens("t2i", torch.full((b,), BOG))
    ids[:, s.text] = size.image_vocab + text
    ids[:, s.image] = torch.where(masked, special + MASK_IMAGE, image)
    mask = attention_mask("t2i", text_len, n, c).unsqueeze(1)
    inputs = Inputs(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(inputs).items()})
    return Batch(inputs=inputs, ids=ids.to(device), attn_mask=mask.to(device), image=s.image,
                 targets=image[masked].to(device))


def build_magvlt(size: Size) -> MAGVLT:
    return MAGVLT(MAGVLTConfig(width=size.width, depth=size.depth, heads=size.heads, dropout=0.0, attn_dropout=0.0,
                               image_vocab=size.image_vocab, text_vocab=size.text_vocab, image_tokens=size.grid**2,
                               text_tokens=size.text_tokens))


def build_peer(size: Size) -> TransformerWrapper:
    """x-transformers' encoder of the same size; its logits cover the image vocabulary (the T2I targets), as
    MAGVLT's head does with the image rows of its tied table."""
    layers = Encoder(dim=size.width, depth=size.depth, heads=size.heads, attn_dim_head=size.width // size.heads,
                     ff_mult=4, attn_flash=True, attn_dropout=0.0, ff_dropout=0.0)
    return TransformerWrapper(num_tokens=size.image_vocab + size.text_vocab + MIXSEL_SPECIALS,
                              max_seq_len=size.sequence_length, logits_dim=size.image_vocab, emb_dropout=0.0,
                              attn_layers=layers)


def magvlt_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(batch.inputs, image_query=batch.inputs.image_masked).image_logits  # (M, image_vocab)
    return F.cross_entropy(logits.float(), batch.targets)


def peer_masked_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    h = model(batch.ids, attn_mask=batch.attn_mask, return_embeddings=True)  # (B, L, D), after the final norm
    logits = model.to_logits(h[:, batch.image][batch.inputs.image_masked])  # (M, image_vocab)
    return F.cross_entropy(logits.float(), batch.targets)


def peer_all_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(batch.ids, attn_mask=batch.attn_mask)  # (B, L, image_vocab)
    return F.cross_entropy(logits[:, batch.image][batch.inputs.image_masked].float(), batch.targets)


LossFn = Callable[[nn.Module, Batch], torch.Tensor]
# The timed paths: which model each trains, and its forward + loss.
PATHS: dict[str, tuple[str, LossFn]] = {
    "magvlt": ("magvlt", magvlt_loss),
    "x_transformers_masked_logits": ("x_transformers", peer_masked_loss),
    "x_transformers_all_logits": ("x_transformers", peer_all_loss),
}
# Parameters by part: each part lists the top-level attribute names that hold it.
PARAM_GROUPS = {
    "magvlt": {"trunk": ("transformer",), "heads": ("head", "length_head"),
               "embeddings": ("tokens", "specials", "pos_image", "pos_text", "pos_special")},
    "x_transformers": {"trunk": ("attn_layers",), "heads": ("to_logits",), "embeddings": ("token_emb", "pos_emb")},
}


def count_params(model: nn.Module, groups: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Parameter counts by group (a group lists top-level attribute names) and in total."""
    counts = dict.fromkeys([*groups, "other"], 0)
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        counts[next((g for g, tops in groups.items() if top in tops), "other")] += p.numel()
    return {**{k: v for k, v in counts.items() if v or k != "other"}, "total": sum(counts.values())}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def describe(error: Exception) -> str:
    """The error's type, first line and, for a compiler's long log, its first line that says "error:"."""
    lines = str(error).splitlines() or [""]
    detail = next((line.strip() for line in lines[1:] if "error:" in line), "")
    return f"{type(error).__name__}: {lines[0]}{' | ' + detail if detail else ''}"[:600]


def time_paths(steps: dict[str, Callable[[], None]], timing: Timing, sync: Callable[[], None],
               catch: bool) -> dict[str, dict]:
    """Per path: the first step's seconds (the compile, when compiled), the median round's seconds per step, and
    the rounds' spread ((slowest - fastest) / median: how much other load disturbed them); with `catch`, a path whose
    warm-up raises is reported by its error instead."""
    results, live = {}, {}
    for name, step in steps.items():
        start = time.perf_counter()
        try:
            step()
            sync()
            first = time.perf_counter() - start
            for _ in range(timing.warmup - 1):
                step()
            sync()
        except Exception as error:  # a compile failure is a result to report, not a crash
            if not catch:
                raise
            results[name] = {"error": describe(error)}
            continue
        results[name], live[name] = {"first_step_s": round(first, 2)}, step
    seconds: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(timing.rounds):
        for name, step in live.items():
            sync()
            start = time.perf_counter()
            for _ in range(timing.steps):
                step()
            sync()
            seconds[name].append((time.perf_counter() - start) / timing.steps)
    for name, times in seconds.items():
        median = statistics.median(times)
        results[name] |= {"step_s": median, "spread": round((max(times) - min(times)) / median, 2)}
    return results


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, batch: Batch,
              autocast: Callable[[], contextlib.AbstractContextManager]) -> Callable[[], None]:
    """One training step: forward and loss (under autocast), backward, AdamW step."""

    def step() -> None:
        with autocast():
            loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def summarize(timed: dict[str, dict], tokens: int, params: dict[str, dict], peak: float | None,
              gpu: bool) -> dict:
    """tokens/s per path, the two ratios, the rounds' spread, compile times and errors, and MFU on a GPU."""
    rate = {name: round(tokens / t["step_s"], 1) for name, t in timed.items() if "step_s" in t}
    entry: dict = {"tokens_per_s": rate}
    for key, peer in (("ratio_equal_work", "x_transformers_masked_logits"),
                      ("ratio_all_logits", "x_transformers_all_logits")):
        entry[key] = round(rate["magvlt"] / rate[peer], 3) if "magvlt" in rate and peer in rate else None
    entry["round_spread"] = {name: t["spread"] for name, t in timed.items() if "spread" in t}
    entry["first_step_s"] = {name: t["first_step_s"] for name, t in timed.items() if "first_step_s" in t}
    entry["errors"] = {name: t["error"] for name, t in timed.items() if "error" in t}
    if gpu:
        entry["mfu"] = {name: round(6 * params[PATHS[name][0]]["total"] * r / peak, 4) if peak else None
                        for name, r in rate.items()}
    return entry


def bench_size(size: Size, device: torch.device, timing: Timing, amp: torch.dtype | None, compile: bool) -> dict:
    torch.manual_seed(0)
    models = {"magvlt": build_magvlt(size).to(device), "x_transformers": build_peer(size).to(device)}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}
    batch = make_batch(size, device)
    tokens = size.batch * size.sequence_length
    params = {name: count_params(model, PARAM_GROUPS[name]) for name, model in models.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    result = {"size": dataclasses.asdict(size), "sequence_length": size.sequence_length, "tokens_per_step": tokens,
              "masked_image_tokens_per_step": int(batch.targets.numel()), "params": params}
    for mode in ("eager", "compiled") if compile else ("eager",):
        wrap = (lambda f: torch.compile(f, dynamic=False)) if mode == "compiled" else (lambda f: f)
        steps = {path: make_step(models[owner], optimizers[owner], wrap(loss_fn), batch, autocast)
                 for path, (owner, loss_fn) in PATHS.items()}
        timed = time_paths(steps, timing, sync, catch=mode == "compiled")
        result[mode] = summarize(timed, tokens, params, peak_flops(device), gpu=device.type == "cuda")
    if compile:
        eager, compiled = result["eager"]["tokens_per_s"], result["compiled"]["tokens_per_s"]
        result["compile_speedup"] = {name: round(compiled[name] / eager[name], 3) for name in compiled}
    return result


def bench_device(device: str | None, cpu: tuple[dict, Timing], gpu: tuple[dict, Timing]
                 ) -> tuple[torch.device, dict, Timing, dict]:
    """The device to benchmark on (a GPU when there is one), its sizes and timing, and the results' header."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = dev.type == "cuda"
    sizes, timing = gpu if on_gpu else cpu
    header = {"device": torch.cuda.get_device_name(dev) if on_gpu else f"cpu ({torch.get_num_threads()} threads)",
              "precision": "bf16 autocast" if on_gpu else "fp32", "timing": dataclasses.asdict(timing)}
    return dev, sizes, timing, header


def run(device: str | None = None) -> dict:
    dev, sizes, timing, header = bench_device(device, (CPU_SIZES, CPU_TIMING), (GPU_SIZES, GPU_TIMING))
    on_gpu = dev.type == "cuda"
    results = {
        **header,
        "ratio_meaning": "vltk tokens/s / x-transformers tokens/s (above 1: vltk is faster)",
        "params_note": "trunk: MAGVLT's blocks have q/k/v/out biases and LayerNorm biases, x-transformers' have "
                       "neither (its LayerNorm is a gain only) but it adds a final norm; embeddings: MAGVLT adds a "
                       "special-token table and three position tables (the official special-position table spans "
                       "4 + N + C rows), x-transformers has one position table and the special ids as vocabulary "
                       "rows; heads: MAGVLT's MaskGIT MLM head (dense + LayerNorm + vocabulary bias, tied to the "
                       "token table) and length head, x-transformers' untied to_logits (width x image vocabulary).",
    }
    if on_gpu:
        peak = peak_flops(dev)
        results["peak_bf16_flops"] = peak
        results["mfu_formula"] = "6 * params (all, embeddings included) * tokens/s / peak"
        if peak is None:
            results["mfu_note"] = f"no dense bf16 peak known for {results['device']!r}: MFU is null"
    for name, size in sizes.items():
        results[name] = bench_size(size, dev, timing, torch.bfloat16 if on_gpu else None,
                                   compile=on_gpu or name in CPU_COMPILED)
    return results


if __name__ == "__main__":
    print(run())
