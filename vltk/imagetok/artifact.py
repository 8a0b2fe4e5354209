"""Load the image tokenizer that `vltk tokenize image` published.

    model, contents = load_image_tokenizer(Path("build/demo/image-tok"))
    contents.kind, contents.grid_size, contents.codebook_size             # 'vqgan', 8, 512
    codes = model.encode(images)                                              # model is in eval mode

The model is rebuilt from the config in the manifest (`contents.model`) and its weights (the EMA weights when the
run used EMA) are read from `model.safetensors`, strictly: a file that does not match the config is an error.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vltk.config import from_dict
from vltk.imagetok import ImageTokenizerConfig, build_image_tokenizer
from vltk.records import ImageTokenizerContents, Stage
from vltk.train.checkpoint import load_published_weights

STAGE = Stage.TOKENIZE_IMAGE
WEIGHTS = "model.safetensors"


def load_image_tokenizer(path: Path) -> tuple[nn.Module, ImageTokenizerContents]:
    """(the tokenizer at `path` in eval mode, its manifest's record)."""
    path = Path(path)
    contents = ImageTokenizerContents.read(path)
    model = build_image_tokenizer(from_dict(ImageTokenizerConfig, contents.model))
    return load_published_weights(model, path, WEIGHTS), contents
