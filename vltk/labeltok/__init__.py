"""UViM's label autoencoder (GIVT §4.2 stage I): config, label maps, model."""

from vltk.labeltok.config import LabelTokenizerConfig
from vltk.labeltok.model import LabelAutoencoder, panoptic_from_logits

__all__ = ["LabelAutoencoder", "LabelTokenizerConfig", "panoptic_from_logits"]
