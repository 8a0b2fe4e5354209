"""GIVT sampling speed: GIVT-Causal's KV-cache decoding against GIVT-MaskGIT's parallel decoding, same size, same batch.

    python -m benchmarks.run --out build/bench/results.json --only givt

Causal: the condition prefix fills a KV cache, then L sequential one-token steps (GIVT §3.2); MaskGIT: S = 16
full passes over [prefix, L tokens], each drawing every still-unknown token (GIVT §4.1). Both models are built from one
GIVTConfig (same trunk width / depth / heads / MLP, same GMM: k = 16 diagonal components of d = 16, same
conditioning), dropout 0, and differ only in `variant` (MaskGIT's label table has three more rows). Each is timed
without guidance (w = 0) and with DB-CFG (w = 0.4): guidance doubles the rows of every forward pass (the conditional
rows, then the same rows with the condition dropped) and draws every token by `vltk.sampling.dbcfg`'s rejection
sampler (the envelope at the analytic mode, proposals in rounds of 4, 32, ... up to 1000 per channel). Rates are
images per second; `maskgit_over_causal` above 1 means MaskGIT is faster. The four paths of a size are timed in interleaved rounds (the
median round each; `round_spread` says how much the rounds disagreed), after one untimed warm-up call.

`trunk_token_positions` is each sampler's trunk work per sample without guidance (guidance doubles both): causal
P + L - 1 positions once through the cache (P = the prefix: the caption's C ids and the label row), MaskGIT S (P + L).
`gmm_draws_per_sample` counts the tokens drawn from the GMM (or the guided density): causal L, MaskGIT the unknown
tokens summed over its S steps (about 10.6 L at S = 16), which is what the rejection sampler's cost follows. The models
are untrained: their head is zero-initialised, so every token is N(0, I) in both passes and DB-CFG's target is the
conditional Gaussian itself (its envelope constant is 2: half the proposals are accepted, and one proposal round
suffices). Speed depends on the weights only through that acceptance rate.

On a CPU (fp32) the demo's size (tiny: width 128, depth 4, heads 4, MLP 512; an 8 x 8 grid, text context 32) at batch 1
and 16, and the paper's sequence length (16 x 16 = 256 tokens, 1000 classes, no text) on a one-layer Default-width
trunk (1024 wide, 16 heads, MLP 4096) at batch 1. Its batch 16 is left out: on one core one unguided MaskGIT call
takes ~35 s, so its four paths alone would take minutes. As in bench_sampling, the causal sampler's thousands of tiny ops suffer
most when other processes load the cores: on a busy machine run with OMP_NUM_THREADS=1. On a GPU the paper's Default
(24 x 1024, 16 heads, MLP 4096: 304M parameters) at 256 tokens runs under bf16 autocast at batch 16 and 64.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import torch

from benchmarks.bench_generators import Timing, bench_device, time_paths
from benchmarks.bench_sampling import CAPTION_TOKENS
from vltk.models.givt import GIVT, GIVTConfig
from vltk.models.gmm import GMMConfig
from vltk.sampling.givt import GIVTSampling, maskgit_mask_counts, sample

VARIANTS = ("causal", "maskgit")
CFG_WEIGHTS = (0.0, 0.4)  # no guidance; DB-CFG at the paper's causal 256 px weight
# A size is the GIVTConfig both variants are built from (bench_generators' Size describes VQ vocabularies, which a
# GIVT has none of) and a batch. d = 16, k = 16 diagonal: the paper's Default (GIVT §4.1, §5.1).
GMM = GMMConfig(kind="diagonal", mixtures=16, channels=16)
DEMO = GIVTConfig(size="tiny", image_tokens=64, text_vocab=1024, text_tokens=32, gmm=GMM, dropout=0.0,
                  attn_dropout=0.0).sized()
PAPER_LENGTH = GIVTConfig(size="default", depth=1, image_tokens=256, num_classes=1000, gmm=GMM, dropout=0.0,
                          attn_dropout=0.0).sized()
DEFAULT = dataclasses.replace(PAPER_LENGTH, depth=24)
CPU_SIZES = {"demo_w128_d4_b1": (DEMO, 1), "demo_w128_d4_b16": (DEMO, 16),
             "paper_length_w1024_d1_b1": (PAPER_LENGTH, 1)}
GPU_SIZES = {"default_b16": (DEFAULT, 16), "default_b64": (DEFAULT, 64)}
# A generation call is long, so a round is one call per path.
CPU_TIMING, GPU_TIMING = Timing(warmup=1, rounds=3, steps=1), Timing(warmup=1, rounds=3, steps=1)


def conditions(cfg: GIVTConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The sampler's condition keywords: class labels (B,) and / or captions (B, C) of caption-like lengths (B,)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    if cfg.num_classes:
        out["labels"] = torch.randint(cfg.num_classes, (batch,), generator=g)
    if cfg.text_tokens:  # ids past text_len are pads: never keys, whatever their value
        out["text"] = torch.randint(cfg.text_vocab, (batch, cfg.text_tokens), generator=g)
        out["text_len"] = torch.randint(CAPTION_TOKENS[0], min(CAPTION_TOKENS[1], cfg.text_tokens) + 1, (batch,),
                                        generator=g)
    return {k: v.to(device) for k, v in out.items()}


def work(cfg: GIVTConfig, steps: int) -> dict[str, dict]:
    """Per sample: trunk token-positions and GMM draws of each sampler (both without guidance)."""
    p, n = cfg.prefix_length, cfg.image_tokens
    positions = {"causal": p + n - 1, "maskgit": steps * (p + n)}
    draws = {"causal": n, "maskgit": n + sum(maskgit_mask_counts(n, steps)[:-1])}  # unknown before each step
    return {key: {**value, "maskgit_over_causal": round(value["maskgit"] / value["causal"], 2)}
            for key, value in (("trunk_token_positions", positions), ("gmm_draws_per_sample", draws))}


def bench_size(cfg: GIVTConfig, batch: int, device: torch.device, timing: Timing, amp: torch.dtype | None) -> dict:
    torch.manual_seed(0)
    models = {v: GIVT(dataclasses.replace(cfg, variant=v)).to(device).eval() for v in VARIANTS}
    condition = conditions(cfg, batch, device)
    g = torch.Generator(device).manual_seed(0)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call(model: GIVT, sampling: GIVTSampling) -> Callable[[], None]:
        def run() -> None:
            with autocast():
                sample(model, sampling, batch=batch, generator=g, **condition)
        return run

    paths = {(v, w): call(models[v], GIVTSampling(temperature=0.95, cfg_weight=w))
             for w in CFG_WEIGHTS for v in VARIANTS}
    timed = time_paths({f"{v}_w{w}": step for (v, w), step in paths.items()}, timing, sync, catch=False)
    rate = {(v, w): round(batch / timed[f"{v}_w{w}"]["step_s"], 3) for v, w in paths}
    steps = GIVTSampling().steps
    result: dict = {
        "model": {"width": cfg.width, "depth": cfg.depth, "heads": cfg.heads, "mlp_width": cfg.mlp_width,
                  "image_tokens": cfg.image_tokens, "latent_channels": cfg.latent_channels,
                  "mixtures": cfg.gmm.mixtures, "num_classes": cfg.num_classes, "text_tokens": cfg.text_tokens,
                  "batch": batch},
        "params": {v: sum(p.numel() for p in m.parameters()) for v, m in models.items()},
        "steps": {"causal": cfg.image_tokens, "maskgit": steps},
        **work(cfg, steps),
    }
    for w in CFG_WEIGHTS:
        result[f"cfg_w{w}"] = {
            "images_per_s": {v: rate[v, w] for v in VARIANTS},
            "maskgit_over_causal": round(rate["maskgit", w] / rate["causal", w], 3),
            "round_spread": {v: timed[f"{v}_w{w}"]["spread"] for v in VARIANTS},
        }
    unguided, guided = CFG_WEIGHTS
    result["guided_over_unguided"] = {v: round(rate[v, guided] / rate[v, unguided], 3) for v in VARIANTS}
    return result


def run(device: str | None = None) -> dict:
    dev, sizes, timing, header = bench_device(device, (CPU_SIZES, CPU_TIMING), (GPU_SIZES, GPU_TIMING))
    on_gpu = dev.type == "cuda"
    results = {
        **header,
        "ratio_meaning": "GIVT-MaskGIT images/s / GIVT-Causal images/s (above 1: MaskGIT is faster)",
        "steps_meaning": "causal: cache steps (one per token, the first from the prefix); maskgit: forward passes",
        "guidance_meaning": "cfg_w0.4: DB-CFG, 2B rows per pass and the rejection sampler; guided_over_unguided: "
                            "the guided rate / the unguided rate of the same sampler",
    }
    for name, (cfg, batch) in sizes.items():
        results[name] = bench_size(cfg, batch, dev, timing, torch.bfloat16 if on_gpu else None)
    return results


if __name__ == "__main__":
    print(run())
