"""Use vltk from Python: open artifacts by path, generate in memory, and run the sample and score stages.

    python examples/python_api.py                          # the artifacts `make demo` built under build/demo
    python examples/python_api.py build/byo-coco --count 4 # or those of examples/bring_your_own_coco.sh

ROOT is a folder holding a generator artifact `gen/` (`vltk train-gen`); everything else is found through the
manifests: the generator names its encoded data, the encoded data its tokenizers. The script writes under --out
(default ROOT/python-api): `t2i-*.png` drawn in memory, then a samples artifact and a scores artifact made by the
same stages the CLI runs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

import vltk
from vltk.errors import VltkError


def main(root: Path, out: Path, count: int, cpu: bool) -> None:
    # 1. Open artifacts by path: the manifest's stage picks the handle; models load on first use.
    gen = vltk.load(root / "gen", device="cpu" if cpu else None)
    encoded = gen.upstream("encoded")
    print(f"{gen}: {gen.contents['summary']}")
    print(f"  trained on {encoded.path} ({encoded.contents['summary']})")
    records = list(itertools.islice(encoded.records("val"), count))
    if not records:
        raise VltkError(f"{encoded.path} has no val records to take prompts and images from")
    prompts = [record.captions[0] for record in records]

    # 2. Text to image, in memory: a list of PIL images (the ones `vltk sample --prompt ... --seed 0` writes).
    out.mkdir(parents=True, exist_ok=True)
    images = gen.text_to_image(prompts, seed=0)
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        image.save(out / f"t2i-{i}.png")
        print(f"  t2i-{i}.png <- {prompt!r}")

    # 3. Image to text: from the val images' token grids, and from PIL images (encoded by the image tokenizer).
    codes = np.stack([record.image["codes"] for record in records])  # (B, h, w)
    for prompt, caption, again in zip(prompts, gen.image_to_text(codes, seed=0), gen.image_to_text(images, seed=0)):
        print(f"  val image of {prompt!r} -> {caption!r}; its t2i image -> {again!r}")

    # 4. The stages, from Python: what `vltk sample` and `vltk score` do, returned as handles.
    samples = vltk.api.sample(gen, out / "samples-i2t", task="i2t", count=count, cpu=cpu)
    scores = vltk.api.score(samples, out / "scores-i2t", meteor=False, cpu=cpu)
    print(f"{samples}: {samples.contents['summary']}")
    for name, value in scores.metrics.get("captions", {}).items():
        print(f"  {name}: {value if value is None else round(value, 4)}")
    print(f"  judge: {scores.metrics['judge']['all']}")
    print(f"report: {scores.report}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", type=Path, default=Path("build/demo"), help="folder holding gen/")
    parser.add_argument("--out", type=Path, help="output folder (default: ROOT/python-api)")
    parser.add_argument("--count", type=int, default=8, help="val records to caption and prompts to draw")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when there is a GPU")
    args = parser.parse_args()
    try:
        main(args.root, args.out or args.root / "python-api", args.count, args.cpu)
    except VltkError as err:  # a wrong path or a missing artifact: one line and exit code 2, as the CLI does
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
