"""Encode throughput: images/s of `vltk encode` on CPU at 32 px with the demo's tokenizer and encode configs.

    python -m benchmarks.run --out build/bench/results.json --only encode

Wall time of the whole stage (loading the tokenizers, decoding the PNGs, encoding, text ids, tar writing) on 1024 shapes
images, measured side by side in one process: the VQ-GAN with the demo's one MixSel pair per train image, the same
without MixSel (what the pairs cost), and the beta-VAE. The tokenizers are the demo architecture trained for one step
(throughput does not depend on the weights). `source_img_per_s` counts the data set's images; `encoded_img_per_s`
also counts the mixed images, each one more tokenizer pass. A GPU number comes from running this same module on a
machine with a GPU: `python -m benchmarks.bench_encode --gpu` (`make bench` pins encode to the CPU).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from vltk.artifacts import read_manifest
from vltk.config import load_config
from vltk.pipeline import encode, shard, synth, tokenize_image, tokenize_text

IMAGES = 1024
SIZE = 32
STAGES = Path(__file__).resolve().parents[1] / "stages" / "demo"


def throughput(cfg: encode.EncodeConfig, root: Path, image_tok: Path, name: str, cpu: bool) -> dict[str, float]:
    out = root / name
    start = time.perf_counter()
    encode.run(cfg, root / "shards", image_tok, root / "text-tok", out, cpu=cpu)
    seconds = time.perf_counter() - start
    splits = read_manifest(out)["contents"]["splits"]
    source = sum(s["samples"] for split, s in splits.items() if not split.startswith("mixsel-"))
    encoded = sum(s["samples"] for s in splits.values())
    return {"source_img_per_s": round(source / seconds, 1), "encoded_img_per_s": round(encoded / seconds, 1)}


def run(cpu: bool = True) -> dict:
    encode_cfg = load_config(encode.EncodeConfig, STAGES / "encode.toml")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth.run(load_config(synth.SynthConfig, STAGES / "synth.toml", [f"count={IMAGES}", f"size={SIZE}"]),
                  root / "raw")
        shard.run(load_config(shard.ShardConfig, STAGES / "shard.toml"), root / "raw", root / "shards", workers=1)
        tokenize_text.run(load_config(tokenize_text.TextTokenizerConfig, STAGES / "tokenize_text.toml"),
                          str(root / "shards"), root / "text-tok")
        toks = {}
        for kind in ("vqgan", "vae"):
            cfg = load_config(tokenize_image.TokenizeImageConfig, STAGES / "tokenize_image.toml",
                              [f"model.kind={kind}", "train.steps=1"])
            toks[kind] = tokenize_image.run(cfg, root / "shards", root / f"{kind}-tok", cpu=True)
        no_mixsel = encode.EncodeConfig(**{**vars(encode_cfg), "mixsel_pairs": 0})
        results = {
            "images": IMAGES,
            "image_size": SIZE,
            "device": "cpu" if cpu else "auto",
            "batch_size": encode_cfg.batch_size,
            "vq_mixsel": throughput(encode_cfg, root, toks["vqgan"], "vq", cpu),
            "vq_no_mixsel": throughput(no_mixsel, root, toks["vqgan"], "vq-plain", cpu),
            "vae_mixsel": throughput(encode_cfg, root, toks["vae"], "vae", cpu),
        }
    results["mixsel_cost"] = round(results["vq_no_mixsel"]["source_img_per_s"]
                                   / results["vq_mixsel"]["source_img_per_s"], 2)
    return results


if __name__ == "__main__":
    print(run(cpu="--gpu" not in sys.argv))
