"""Load the image tokenizer that `vltk tokenize image` published.

    model, contents = load_image_tokenizer(Path("build/demo/image-tok"))
    contents["kind"], contents["grid_size"], contents.get("codebook_size")    # 'vqgan', 8, 512
    codes = model.encode(images)                                              # model is in eval mode

The model is rebuilt from the config in the manifest (`contents["model"]`) and its weights (the EMA weights when the
run used EMA) are read from `model.safetensors`, strictly: a file that does not match the config is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vltk.artifacts import open_artifact
from vltk.config import from_dict
from vltk.imagetok import ImageTokenizerConfig, build_image_tokenizer
from vltk.train.checkpoint import load_published_weights

STAGE = "tokenize-image"
WEIGHTS = "model.safetensors"


def load_image_tokenizer(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(the tokenizer at `path` in eval mode, its manifest's contents)."""
    path = Path(path)
    contents = open_artifact(path, STAGE)["contents"]
    model = build_image_tokenizer(from_dict(ImageTokenizerConfig, contents["model"]))
    return load_published_weights(model, path, WEIGHTS), contents
