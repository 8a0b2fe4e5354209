"""UViM's label autoencoder (stage I) with GIVT's Gaussian bottleneck or UViM's VQ one.

    model = LabelAutoencoder(LabelTokenizerConfig(task="panoptic", image_size=32, patch_size=4, width=128,
                                                  enc_depth=2, dec_depth=3, heads=4, mlp_width=256, code_len=16,
                                                  num_classes=5, max_instances=16))
    mu, logvar = model.encode(labels)          # labels (B, 32, 32, 2) long -> each (B, 16, d)
    logits = model.decode(mu)                  # {"semantics": (B, 5, 32, 32), "instances": (B, 16, 32, 32)}
    model.predict(logits)                      # (B, 32, 32, 2) long [semantic, instance]; depth: (B, H, W) metres

The network is google-research/big_vision big_vision/models/proj/givt/vit.py with `bottleneck_resize=True` (the
GIVT configs' choice, vae_coco_panoptic.py / vae_nyu_depth.py): each label channel one-hot over its classes and
concatenated, a patch-size-strided conv embedding, a learned position embedding, a ViT encoder (pre-LN, tanh GELU, a
final LayerNorm as big_vision's vit.Encoder), a bilinear resize of the patch grid to sqrt(code_len)^2 tokens
(antialiased when shrinking, as jax.image.resize), and a Dense to (mu, logvar) of d channels each. The decoder mirrors
it: Dense d -> width, bilinear resize back to the patch grid, a learned position embedding, a ViT, and a zero-initialised
head of (sum of classes) * patch^2 logits per patch, so a fresh model predicts uniform distributions. The "vq"
bottleneck (UViM's VQ-VAE, big_vision models/proj/uvim/vit.py) projects to d channels and quantises them with
vltk's quantizer (EMA dictionary, commitment loss; `LabelTokenizerConfig.quantizer`); the rest is the same network.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vltk.imagetok.quantizers import VectorQuantizer
from vltk.imagetok.vae import gaussian_kl
from vltk.labeltok.config import LabelTokenizerConfig
from vltk.labeltok.maps import unbin_depth
from vltk.models.layers import init_weights
from vltk.models.vit import TokenEncoder

LOGVAR_RANGE = (-30.0, 20.0)  # as the image VAE (big_vision givt/cnn.py): exp(logvar) stays finite


class LabelOutput(NamedTuple):
    logits: dict[str, torch.Tensor]  # group -> (B, K, H, W)
    loss_terms: dict[str, torch.Tensor]  # weighted bottleneck terms: "kl" (vae) or "vq"
    stats: dict[str, float]


def panoptic_from_logits(semantics: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """UViM's panoptic_predictions_from_logits (big_vision trainers/proj/uvim/panoptic_task.py, min_fraction 0):
    semantics (B, K, H, W), instances (B, N, H, W) -> (B, H, W, 2) long [semantic, instance]: the instance is the
    argmax of its logits, and every pixel of an instance takes the class whose logits summed over its pixels are
    largest, so an instance is never split between classes."""
    instance = instances.argmax(1)  # (B, H, W)
    masks = F.one_hot(instance, instances.shape[1]).to(semantics.dtype)  # (B, H, W, N)
    label = torch.einsum("bkhw,bhwn->bnk", semantics, masks).argmax(-1)  # (B, N)
    semantic = torch.gather(label, 1, instance.flatten(1)).view_as(instance)
    return torch.stack([semantic, instance], dim=-1)


def resize_tokens(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, s*s, C) tokens of a square grid -> (B, side*side, C), bilinear (antialiased when shrinking)."""
    b, t, c = x.shape
    s = round(t**0.5)
    grid = x.transpose(1, 2).reshape(b, c, s, s)
    grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False, antialias=side < s)
    return grid.flatten(2).transpose(1, 2)


class LabelAutoencoder(nn.Module):
    def __init__(self, cfg: LabelTokenizerConfig) -> None:
        super().__init__()
        if cfg.task == "panoptic" and cfg.num_classes < 2:
            raise ValueError("a panoptic label autoencoder needs num_classes (from the data's categories)")
        self.cfg = cfg
        channels, p, d = sum(cfg.groups.values()), cfg.patch_size, cfg.codeword_dim
        self.embedding = nn.Conv2d(channels, cfg.width, p, stride=p)
        self.encoder = TokenEncoder(cfg.trunk(cfg.enc_depth), cfg.grid_size**2)
        self.encoder_head = nn.Linear(cfg.width, 2 * d if cfg.bottleneck == "vae" else d)
        self.quantizer = VectorQuantizer(cfg.quantizer) if cfg.bottleneck == "vq" else None
        self.decoder_stem = nn.Linear(d, cfg.width)
        self.decoder = TokenEncoder(cfg.trunk(cfg.dec_depth), cfg.grid_size**2)
        self.head = nn.Linear(cfg.width, channels * p * p)
        self.apply(init_weights)
        nn.init.zeros_(self.head.weight)  # head_zeroinit: uniform logits at the start

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) long labels -> (B, grid^2, width): big_vision's patch conv of the label channels one-hot over
        their groups and concatenated, computed as what it is, a sum over each patch's pixels and channels of one
        kernel column per (pixel offset, class), so that the one-hot maps (256 depth bins: 256 floats a pixel, ~10x
        the step time of this small model) are never built. The parameters stay the conv's."""
        cfg, p = self.cfg, self.cfg.patch_size
        b, h, w, c = labels.shape
        offsets = torch.tensor([0, *self.cfg.groups.values()][:c], device=labels.device).cumsum(0)  # (C,)
        rows = labels + offsets  # (B, H, W, C): the one-hot channel of each label
        rows = rows.view(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)  # (B, h, w, dy, dx, C)
        within = torch.arange(p * p, device=labels.device).view(p, p, 1) * sum(self.cfg.groups.values())
        index = (rows + within).flatten(3).flatten(0, 2)  # (B h w, p p C): rows of the table below
        table = self.embedding.weight.permute(2, 3, 1, 0).flatten(0, 2)  # (p p sum-of-classes, width)
        x = F.embedding_bag(index, table, mode="sum") + self.embedding.bias  # (B h w, width)
        return x.view(b, (h // p) * (w // p), cfg.width)

    def features(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) long -> (B, code_len, 2d) for vae, (B, code_len, d) for vq: the bottleneck's input."""
        return self.encoder_head(resize_tokens(self.encoder.encode(self.embed(labels)), self.cfg.code_side))

    def encode(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vae: (mu, logvar) each (B, code_len, d); vq: (z_q (B, code_len, d), codes (B, code_len) long)."""
        h = self.features(labels)
        if self.quantizer is None:
            return self._posterior(h)
        codes = self.quantizer.encode(self._grid(h)).flatten(1)
        return self.embed_codes(codes), codes

    @staticmethod
    def _posterior(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vae: the bottleneck's input (B, code_len, 2d) -> (mu, logvar) each (B, code_len, d), logvar clamped."""
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """vq: (B, code_len) long -> (B, code_len, d) codewords."""
        if self.quantizer is None:
            raise ValueError("embed_codes is for the vq bottleneck")
        return F.embedding(codes, self.quantizer.codes())

    def _grid(self, z: torch.Tensor) -> torch.Tensor:
        """(B, code_len, d) -> (B, d, side, side), the quantizer's layout."""
        return z.transpose(1, 2).reshape(len(z), -1, self.cfg.code_side, self.cfg.code_side)

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, code_len, d) -> {group: (B, K, H, W) logits}."""
        cfg, g, p = self.cfg, self.cfg.grid_size, self.cfg.patch_size
        x = self.decoder.encode(resize_tokens(self.decoder_stem(z), g))
        x = self.head(x).view(len(z), g, g, p, p, -1)  # (B, h, w, p, q, C): "b (h w) (p q c)"
        x = x.permute(0, 5, 1, 3, 2, 4).reshape(len(z), -1, g * p, g * p)  # "b c (h p) (w q)"
        return dict(zip(cfg.groups, x.split(list(cfg.groups.values()), dim=1)))

    def forward(self, labels: torch.Tensor) -> LabelOutput:
        """Training: z sampled from the posterior (vae) or quantised (vq); eval: the posterior mean."""
        h = self.features(labels)
        if self.quantizer is None:
            mu, logvar = self._posterior(h)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.training else mu
            kl = gaussian_kl(mu.float(), logvar.float())
            stats = {"kl_per_example": kl.item(), "logvar": logvar.mean().item()}
            return LabelOutput(self.decode(z), {"kl": self.cfg.beta * kl}, stats)
        q = self.quantizer(self._grid(h))
        z = q.z_q.flatten(2).transpose(1, 2)
        return LabelOutput(self.decode(z), {"vq": q.loss}, q.stats)

    def predict(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """panoptic: (B, H, W, 2) long [semantic, instance]; depth: (B, H, W) float32 metres at the bins' centres."""
        cfg = self.cfg
        if cfg.task == "panoptic":
            return panoptic_from_logits(logits["semantics"].float(), logits["instances"].float())
        bins = logits["depth"].argmax(1).cpu().numpy()
        metres = unbin_depth(bins, min_depth=cfg.min_depth, max_depth=cfg.max_depth, bins=cfg.depth_bins)
        return torch.from_numpy(metres).to(logits["depth"].device)
