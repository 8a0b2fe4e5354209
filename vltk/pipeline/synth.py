"""Stage `synth`: write the built-in data set (scenes of coloured shapes with paraphrased captions) as a plain folder.

    vltk synth shapes build/demo/raw --count 2000 --size 32

The folder is ingested by `vltk shard` like any user data:

    OUT/images/000000.png ...   RGB, size x size
    OUT/captions.jsonl          {"image": "images/000000.png", "captions": [...], "split": "train" | "val",
                                 "heldout": false, "objects": [{"shape", "color", "size", "row", "col"}, ...]}
    OUT/manifest.json

Each scene is a pure function of (seed, index): its split, its objects and its captions come from one random stream
seeded by both, so the same config gives byte-identical files. Held-out (colour, shape) combinations never appear in
train; half of the val scenes are made to contain one (and flagged), to measure compositional generalisation.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from vltk import artifacts
from vltk.config import require_range
from vltk.data import shapes
from vltk.records import Stage
from vltk.ui import progress

HELDOUT_SHARE = 0.5  # of val scenes, made to contain a held-out combination (when there are any)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SynthConfig:
    count: int = 2000
    size: int = 32
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 2
    captions_per_image: int = 4
    val_fraction: float = 0.1
    heldout: tuple[str, ...] = ("red triangle", "blue circle")  # "colour shape": never in train

    def __post_init__(self) -> None:
        require_range(self, "count", "captions_per_image")
        if self.size < 16:
            raise ValueError(f"size must be >= 16 pixels (shapes must stay recognisable), got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects <= 3:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 3, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        pairs = shapes.parse_pairs(self.heldout)
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"heldout lists a combination twice: {list(self.heldout)}")
        if len(pairs) >= len(shapes.COLORS) * len(shapes.SHAPES):
            raise ValueError("heldout holds out every colour-shape combination; train would be empty")


@dataclasses.dataclass(frozen=True)
class Example:
    scene: shapes.Scene
    captions: list[str]
    split: str
    heldout: bool


def make_example(cfg: SynthConfig, index: int) -> Example:
    """Scene `index` of the data set: a pure function of the config's seed and the index."""
    rng = random.Random(f"vltk-synth/{cfg.seed}/{index}")  # str seeds hash with SHA-512: stable across runs
    pairs = shapes.parse_pairs(cfg.heldout)
    counts = {"min_objects": cfg.min_objects, "max_objects": cfg.max_objects}
    split = "val" if rng.random() < cfg.val_fraction else "train"
    if split == "train":
        scene = shapes.sample_scene(rng, **counts, avoid=pairs)
    elif pairs and rng.random() < HELDOUT_SHARE:
        scene = shapes.sample_scene(rng, **counts, require=pairs)
    else:
        scene = shapes.sample_scene(rng, **counts)
    heldout = any((obj.color, obj.shape) in pairs for obj in scene)
    return Example(scene, shapes.write_captions(scene, rng, cfg.captions_per_image), split, heldout)


def run(cfg: SynthConfig, out: Path, *, force: bool = False) -> Path:
    """Write the data set to `out` (a no-op when it already holds this config's output)."""
    job = artifacts.begin(out, stage=Stage.SYNTH, config=cfg, inputs={}, force=force)
    if job is None:
        return out
    (job.work / "images").mkdir()
    splits = {"train": 0, "val": 0}
    heldout = 0
    with open(job.work / "captions.jsonl", "w") as lines, progress("synth shapes", cfg.count, "img") as advance:
        for index in range(cfg.count):
            example = make_example(cfg, index)
            name = f"images/{index:06d}.png"
            shapes.render(example.scene, cfg.size).save(job.work / name, format="PNG")
            record = {
                "image": name, "captions": example.captions, "split": example.split, "heldout": example.heldout,
                "objects": [obj.attributes() for obj in example.scene],
            }
            lines.write(json.dumps(record) + "\n")
            splits[example.split] += 1
            heldout += example.heldout
            advance()
    return job.publish(contents={
        "images": cfg.count,
        "splits": splits,
        "heldout": heldout,
        "image_size": cfg.size,
        "vocabulary": {"shapes": list(shapes.SHAPES), "colors": list(shapes.COLORS), "sizes": list(shapes.SIZES)},
        "summary": f"{cfg.count} scenes of {cfg.size} px ({splits['train']} train, {splits['val']} val, "
                   f"{heldout} with held-out combinations)",
    })
