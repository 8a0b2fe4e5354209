"""Stage `synth`: write the built-in data set (scenes of coloured shapes with paraphrased captions) as a plain folder.

    vltk synth shapes build/demo/raw --count 2000 --size 32

The folder is ingested by `vltk shard` like any user data:

    OUT/images/000000.png ...   RGB, size x size
    OUT/panoptic/000000.png ... its COCO panoptic label (RGB: segment id = R + 256 G + 256^2 B, 0 = void)
    OUT/depth/000000.png ...    its depth, 16-bit millimetres
    OUT/captions.jsonl          {"image": "images/000000.png", "captions": [...], "split": "train" | "val",
                                 "heldout": false, "objects": [{"shape", "color", "size", "row", "col"}, ...],
                                 "panoptic": "panoptic/000000.png", "segments_info": [{"id", "category_id",
                                 "iscrowd", "area", "bbox"}, ...], "depth": "depth/000000.png"}
    OUT/manifest.json           contents.categories: the panoptic categories (COCO's {id, name, isthing, ...})

The label rules (categories, segment ids, the depth of the background and of each object) are in
`vltk.data.shape_labels`.

Each scene is a pure function of (seed, index): its split, its objects and its captions come from one random stream
seeded by both, so the same config gives byte-identical files (the depths come from a stream of their own, so the
images and captions are the ones written before there were labels). Held-out (colour, shape) combinations never
appear in train; half of the val scenes are made to contain one (and flagged), to measure compositional
generalisation.

Labels cost about 1.5 ms per image on one CPU core (the images and captions about 0.5 ms): seconds for the demo's
4,000 images, so they are always written.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

from vltk import artifacts
from vltk.config import require_range
from vltk.data import depth, panoptic, shape_labels, shapes
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


def write_labels(cfg: SynthConfig, index: int, scene: shapes.Scene, folder: Path) -> dict[str, Any]:
    """Write scene `index`'s panoptic and depth PNGs into `folder`; what its captions.jsonl record says of them."""
    masks = shapes.masks(scene, cfg.size)
    ids, segments = shape_labels.panoptic(masks, scene)
    metres = shape_labels.depth(masks, scene, shape_labels.depth_rng(cfg.seed, index))
    names = {"panoptic": f"panoptic/{index:06d}.png", "depth": f"depth/{index:06d}.png"}
    (folder / names["panoptic"]).write_bytes(panoptic.encode_png(ids))
    (folder / names["depth"]).write_bytes(depth.encode_png(depth.to_units(metres)))
    return {"panoptic": names["panoptic"], "segments_info": segments, "depth": names["depth"]}


def run(cfg: SynthConfig, out: Path, *, force: bool = False) -> Path:
    """Write the data set to `out` (a no-op when it already holds this config's output)."""
    job = artifacts.begin(out, stage=Stage.SYNTH, config=cfg, inputs={}, force=force)
    if job is None:
        return out
    for folder in ("images", "panoptic", "depth"):
        (job.work / folder).mkdir()
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
                **write_labels(cfg, index, example.scene, job.work),
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
        "categories": shape_labels.CATEGORIES,
        "depth_unit": "mm",
        "summary": f"{cfg.count} scenes of {cfg.size} px ({splits['train']} train, {splits['val']} val, "
                   f"{heldout} with held-out combinations)",
    })
