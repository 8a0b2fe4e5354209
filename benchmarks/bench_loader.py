"""Generator batches per second from `TokenBatches` at the paper's settings, built in 0, 2 and 4 DataLoader workers,
beside what a training step of MAGVLT-base consumes.

    python -m benchmarks.run --out build/bench/results.json --only loader

The data: 2,048 shapes scenes encoded to a 16 x 16 grid of a 16,384-code VQ-GAN (random init, 64 px at f4: the
loader's cost depends on the grid and the captions, not on the pixels), CLIP's BPE (49,408 tokens, open_clip's copy)
with context 64, one MixSel pair per image, and the paper's batch settings: BPE-dropout 0.1 (each caption re-encoded),
MixSel on. `samples_per_s` counts one process's samples (a global batch of 4,096 over 8 processes: 512 each) after
the workers' start-up, through `vltk.data.loader.batches` as the training loop reads them.

The consumption side: one MAGVLT-base step on an H100 at 40% MFU takes a sample in 3 x passes x forward FLOPs
(`vltk plan`'s formula: 2.9 passes of 324 tokens with UnrollMask and MixSel, forward 2 P T + 4 L T^2 d + the MLM head),
so a GPU consumes 0.4 x 989e12 / that samples/s; `ratio_vs_h100` = loader / consumption (the target: >= 2 with <= 4
workers). On this CPU the demo's own steps/s is measured with the loader inside the step (0 workers) and with 2
workers, the same 200 steps.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import warnings
from pathlib import Path

from vltk.artifacts import read_manifest
from vltk.config import load_config
from vltk.data.loader import batches
from vltk.data.token_batches import TokenBatches
from vltk.pipeline import encode, plan, shard, synth, tokenize_image, tokenize_text, train_gen
from vltk.text.bpe import BPETokenizer

IMAGES, SIZE, LOCAL_BATCH, BATCHES = 2048, 64, 512, 12
ROOT = Path(__file__).resolve().parents[1]


def paper_data(root: Path) -> Path:
    synth.run(synth.SynthConfig(count=IMAGES, size=SIZE, seed=0, captions_per_image=5), root / "raw")
    shard.run(shard.ShardConfig(size=SIZE, image_format="png"), root / "raw", root / "shards", workers=1)
    tokenize_text.run(load_config(tokenize_text.TextTokenizerConfig, ROOT / "stages/paper/tokenize_text.toml"),
                      "clip", root / "text-tok")
    image = ["model.encoder.channels=8", "model.encoder.channel_mult=[1, 2, 2]", "model.encoder.num_res_blocks=1",
             "model.encoder.attn_resolutions=[]", "model.encoder.z_channels=8", "model.quantizer.codebook_size=16384",
             "model.quantizer.code_dim=8", "train.steps=1", "train.batch_size=8", "eval_batch_size=64",
             "recon_images=2"]
    tok = tokenize_image.run(load_config(tokenize_image.TokenizeImageConfig, None, image), root / "shards",
                             root / "image-tok", cpu=True)
    return encode.run(encode.EncodeConfig(mixsel_pairs=1), root / "shards", tok, root / "text-tok", root / "encoded",
                      cpu=True)


def loader_rate(data: TokenBatches, workers: int) -> float:
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on a 2-core machine
    stream = iter(batches(data, 0, workers))
    next(stream)  # start-up (worker processes, their first batches) is not counted
    start = time.perf_counter()
    for _ in itertools.islice(stream, BATCHES):
        pass
    return BATCHES * LOCAL_BATCH / (time.perf_counter() - start)


def h100_consumption() -> dict[str, float]:
    """vltk plan's MAGVLT-base training row for stages/paper: its FLOPs per sample, and what an H100 at 40% MFU takes."""
    rows = plan.plan(plan.PlanConfig(stages=str(ROOT / "stages" / "paper")))
    row = next(r for r in rows if r.stage == "train-gen magvlt")
    per_sample = row.flops / row.samples
    return {"flops_per_sample": per_sample, "samples_per_s": 0.4 * plan.PEAK["h100"] / per_sample}


def demo_steps_per_s(root: Path, workers: int) -> float:
    cfg = load_config(train_gen.MAGVLTTrainConfig, ROOT / "stages/demo/train_gen.toml",
                      ["train.steps=200", "train.checkpoint_every=1000", f"train.loader_workers={workers}"])
    out = train_gen.run(cfg, ROOT / "build/demo/encoded", root / f"demo-{workers}", cpu=True)
    return read_manifest(out)["contents"]["train"]["steps_per_s"]


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        encoded = paper_data(root)
        tok = BPETokenizer.from_artifact(root / "text-tok")
        data = TokenBatches(encoded, "train", batch_size=LOCAL_BATCH * 8, seed=0, rank=0, world_size=8, mixsel=True,
                            bpe_dropout=0.1, tokenizer=tok)
        rates = {workers: round(loader_rate(data, workers), 1) for workers in (0, 2, 4)}
        gpu = h100_consumption()
        result = {
            "settings": {"grid": "16x16", "context": 64, "text_vocab": tok.vocab_size, "bpe_dropout": 0.1,
                         "mixsel": True, "samples_per_process_batch": LOCAL_BATCH},
            "samples_per_s": {f"workers_{w}": r for w, r in rates.items()},
            "h100_base_step": {"flops_per_sample": f"{gpu['flops_per_sample']:.3e}",
                               "samples_per_s_at_40pct_mfu": round(gpu["samples_per_s"], 1)},
            "ratio_vs_h100": {f"workers_{w}": round(r / gpu["samples_per_s"], 2) for w, r in rates.items()},
        }
        if (ROOT / "build/demo/encoded/manifest.json").is_file():  # the demo's data, when make demo has run
            result["demo_steps_per_s"] = {f"workers_{w}": demo_steps_per_s(root, w) for w in (0, 2)}
        else:
            result["demo_steps_per_s"] = "unavailable: run make demo first (it reads build/demo/encoded)"
        return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
