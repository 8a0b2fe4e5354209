"""The Python API: open any artifact by path, generate in memory, and run the sample and score stages from a script.

    import vltk
    gen = vltk.load("build/demo/gen")                               # a Generator (the manifest's stage picks the handle)
    images = gen.text_to_image(["a small red circle"], seed=0)      # [PIL.Image]: what `vltk sample --prompt` draws
    captions = gen.image_to_text(images, seed=0)                    # ["a small red circle", ...]
    samples = vltk.api.sample(gen, "build/demo/samples-api", task="i2t", count=16)
    scores = vltk.api.score(samples, "build/demo/scores-api", meteor=False)
    scores.metrics["captions"]["CIDEr"], samples.rows[0]["caption"]

Every handle has its manifest's `stage`, `config`, `contents` and `inputs`, and `upstream(name)` opens an input
artifact. What an artifact holds is loaded on first use: a generator's `model`, `text_tokenizer` (a BPETokenizer) and
`image_tokenizer` (a handle), a text tokenizer's `tokenizer`, an image tokenizer's `model` (with `encode` / `decode`),
an encoded artifact's and a shards artifact's records, samples' `rows` and `images()`, scores' `metrics`.

Generation goes through the generation core the sample stage uses (`vltk.sampling.generate`), batch by batch with its
seeding (batch k of `config.batch_size` items is seeded by seed + its first index), after the stage's checks, so
`gen.text_to_image(prompts, seed=s)` gives the very images `vltk sample GEN OUT --prompt ... --seed s` writes; every
sampler knob is a field of `GenerateConfig` (`config=GenerateConfig(magvlt=MAGVLTSampling(image_steps=12))`). Models
run on the GPU when there is one, unless `load(path, device="cpu")`. The handles live in `vltk.handles`; this module
re-exports them and runs the sample and score stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, cast

from vltk.config import load_config
from vltk.handles import (
    HANDLES, Artifact, Encoded, Generator, ImageTokenizer, Images, PathLike, Samples, Scores, Shards, TextTokenizer,
    load,
)
from vltk.pipeline import sample as sample_stage
from vltk.pipeline import score as score_stage
from vltk.sampling.generate import GenerateConfig

__all__ = ["HANDLES", "Artifact", "Encoded", "GenerateConfig", "Generator", "ImageTokenizer", "Images", "PathLike",
           "Samples", "Scores", "Shards", "TextTokenizer", "load", "sample", "score"]


def _path(artifact: Artifact | PathLike) -> Path:
    return artifact.path if isinstance(artifact, Artifact) else Path(artifact)


def sample(gen: Artifact | PathLike, out: PathLike, *, config: PathLike | None = None, overrides: Sequence[str] = (),
           force: bool = False, cpu: bool = False, **settings: Any) -> Samples:
    """Run `vltk sample` and open what it wrote. `settings` are config keys (task="i2t", count=16, prompts=[...],
    or nested ones by name: **{"magvlt.image_steps": 12}), layered as the CLI layers its flags: defaults <- the TOML
    `config` <- settings <- `overrides` ("key=value" strings, as --set)."""
    cfg = load_config(sample_stage.SampleConfig, Path(config) if config else None, overrides, settings)
    return cast(Samples, load(sample_stage.run(cfg, _path(gen), Path(out), force=force, cpu=cpu), sample_stage.STAGE))


def score(samples: Artifact | PathLike, out: PathLike, *, config: PathLike | None = None,
          overrides: Sequence[str] = (), force: bool = False, cpu: bool = False, **settings: Any) -> Scores:
    """Run `vltk score` and open what it wrote; settings as in `sample` (meteor=False skips METEOR's Java start)."""
    cfg = load_config(score_stage.ScoreConfig, Path(config) if config else None, overrides, settings)
    return cast(Scores, load(score_stage.run(cfg, _path(samples), Path(out), force=force, cpu=cpu), score_stage.STAGE))
