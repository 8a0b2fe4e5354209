"""Load the label autoencoder that `vltk tokenize label` published.

    model, contents = load_label_tokenizer(Path("build/demo/label-tok-panoptic"))
    contents.task, contents.code_len, contents.latent_channels           # 'panoptic', 16, 32
    mu, logvar = model.encode(labels)                                     # model is in eval mode

The model is rebuilt from the config in the manifest (`contents.model`) and its weights read from
`model.safetensors`, strictly: a file that does not match the config is an error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vltk.config import from_dict
from vltk.labeltok.config import LabelTokenizerConfig
from vltk.labeltok.model import LabelAutoencoder
from vltk.records import LabelTokenizerContents, Stage
from vltk.train.checkpoint import load_published_weights

STAGE = Stage.TOKENIZE_LABEL
WEIGHTS = "model.safetensors"


def load_label_tokenizer(path: Path, device: str | torch.device = "cpu"
                         ) -> tuple[LabelAutoencoder, LabelTokenizerContents]:
    """(the label autoencoder at `path` on `device`, in eval mode; its manifest's record)."""
    path = Path(path)
    contents = LabelTokenizerContents.read(path)
    model = LabelAutoencoder(from_dict(LabelTokenizerConfig, contents.model))
    return load_published_weights(model, path, WEIGHTS).to(device), contents
