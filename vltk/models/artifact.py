"""Load the generator that `vltk train-gen` published.

    model, contents = load_generator(Path("build/demo/gen"))
    contents.generator, contents.grid_size                       # 'magvlt', 8

The model is rebuilt from the config in the manifest (`contents.model`) and its weights (the EMA weights when the run
used EMA) are read from `model.safetensors`, strictly.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vltk.config import from_dict
from vltk.models.argvlt import ARGVLT, ARGVLTConfig
from vltk.models.givt import GIVT, GIVTConfig
from vltk.models.magvlt import MAGVLT, MAGVLTConfig
from vltk.records import GeneratorContents, Stage
from vltk.train.checkpoint import load_published_weights

STAGE = Stage.TRAIN_GEN
WEIGHTS = "model.safetensors"
GENERATORS: dict[str, tuple[type, type]] = {"magvlt": (MAGVLT, MAGVLTConfig), "argvlt": (ARGVLT, ARGVLTConfig),
                                             "givt-causal": (GIVT, GIVTConfig), "givt-maskgit": (GIVT, GIVTConfig),
                                             "givt-uvim": (GIVT, GIVTConfig)}


def load_generator(path: Path) -> tuple[nn.Module, GeneratorContents]:
    """(the generator at `path` in eval mode, its manifest's record)."""
    contents = GeneratorContents.read(Path(path))
    model_cls, config_cls = GENERATORS[contents.generator]
    return load_published_weights(model_cls(from_dict(config_cls, contents.model)), path, WEIGHTS), contents
