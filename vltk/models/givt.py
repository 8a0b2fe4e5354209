"""GIVT: a transformer over continuous soft tokens with a Gaussian-mixture output per token (GIVT §3.2 and App. B).

    cfg = GIVTConfig(size="tiny", image_tokens=64, num_classes=10, gmm=GMMConfig(channels=16))
    model = GIVT(cfg)
    raw = model(z, labels)                          # z (B, 64, 16) -> (B, 64, cfg.gmm.num_logits)
    loss = nll(GMM.from_logits(raw, cfg.gmm), z).mean()
    cache = model.new_cache(batch=z.shape[0])
    raw0 = model.prefill(cache, labels)             # (B, num_logits): p(z_0 | c)
    raw1 = model.step(cache, z[:, :1])              # p(z_1 | z_0, c); feed each sampled token next
    masked = maskgit_mask(B, 64, generator)         # variant="maskgit": raw = model(z, labels, masked=masked)

    uvim = GIVTConfig(size="default", image_tokens=256, gmm=GMMConfig(mixtures=1, channels=32), label_dropout=0.0,
                      encoder=ViTConfig(image_size=512, patch_size=16, width=1024, depth=24, heads=16))
    raw = GIVT(uvim)(z, image=images)               # images (B, 3, 512, 512) in [-1, 1]: UViM's stage II
    raw0 = model.prefill(cache, image=images)       # the ViT runs once; its K/V stay in the cache for every step

The sequence is [condition prefix, tokens]. The prefix is P = C + 1 long: for text conditioning (text_tokens = C > 0)
the caption's C BPE ids from a text table, then one row of the label table (a class, BOS for a model without classes,
or NOLABEL). The label row comes last because in the causal model its output predicts z_0, and a caption pad must not
be the query that does. Caption pads (positions >= text_len) stay in the sequence but are never keys (a pad query
sees only itself; nothing reads its output). Dropping the condition for classifier-free guidance (`drop`,
p = label_dropout in training) sets the label to NOLABEL and text_len to 0: the unconditional model sees NOLABEL
alone. One learned position table covers the whole sequence, prefix included, as big_vision's (without text it is
exactly big_vision's layout).

    causal   [prefix, Dense(z_0), ..., Dense(z_{L-2})], a causal mask; the output at the last prefix position and at
             each token predicts the next token, so output i parametrises p(z_i | z_<i, c). A KV cache decodes.
    maskgit  [prefix, fused(z_0), ..., fused(z_{L-1})] with no mask; the outputs at the L token positions are kept.
             "concat" fusion: a masked token is the learned REPLACE vector, a visible one Dense(z); the result is
             concat(MASK or NOMASK indicator[even channels], token[even channels]). MASK / NOMASK / REPLACE are rows
             of the label table, as in big_vision.

With `adapter` set, GIVT models adapter(z) instead of z (`adapt`, on the square h x w grid of the latents; trained
jointly, no log-det: its Jacobian is 1), and sampled tokens go back through `unadapt` before the VAE decodes them.

Tokens enter through one Linear d -> E with a bias (LeCun-normal, as Flax's Dense); label and text tables are N(0, 1),
positions N(0, 1/sqrt(E)). After the trunk: a LayerNorm with bias, then Linear E -> num_logits initialised to zero,
so that at init every token is N(0, I). The trunk is vltk's shared pre-LN transformer (init N(0, 0.02)) with GIVT's
switches: no biases in the attention and the block LayerNorms, a tanh GELU (Flax's default, for checkpoint parity) and
the preset's MLP width (Large: 8192 for 1536). The MLP keeps its biases, as big_vision's does although the paper says
they were removed. One difference remains: big_vision's MLP drops out after its GELU, vltk's blocks after the MLP.

UViM stage II (GIVT §4.2, App. B, C.3; big_vision givt.py with num_layers > 0, configs/proj/givt/givt_nyu_depth.py,
givt_coco_panoptic.py). With `encoder` set the causal GIVT is an encoder-decoder: a ViT (`vltk.models.vit`) encodes
the image to (B, P, E_enc) patch features, and every decoder block cross-attends to them after its self-attention
("we employ the causal variant ... and insert a cross-attention layer after each self-attention layer"; big_vision's
`EncoderDecoderBlock`, without biases as the decoder's self-attention). The prefix is the BOS label row alone
(big_vision's num_labels=None; UViM's "without encoder and decoder context"): no classes, no text, no guidance.
big_vision encodes at the decoder's width (one emb_dim for both); here the encoder may be narrower or wider, and only
then a Linear E_enc -> E (LeCun-normal, zero bias) maps its features. The ViT runs once per forward or prefill.

The VQ baseline (UViM's original stage II) is the same network over discrete codes: with `codebook_size` V > 0 the
tokens are (B, L) code indices that enter through an Embedding V x E (N(0, 1/E), Flax's nn.Embed default as in
big_vision's proj/uvim/vtt.py) instead of the Dense, and the head gives V logits (softmax, cross-entropy) instead of a
GMM's parameters; `gmm` is then unused. Everything else (prefix, positions, trunk, norm, zero-initialised head: uniform
logits at init, KV cache, encoder) is shared.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import torch
from torch import nn

from vltk.masking import random_subset
from vltk.models.adapter import Adapter, AdapterConfig
from vltk.models.gmm import GMMConfig
from vltk.models.layers import KVCache, Preset, Transformer, TransformerConfig, init_weights
from vltk.models.vit import ViT, ViTConfig
from vltk.schedules import mask_count, mask_fraction

Variant = Literal["causal", "maskgit"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GIVTConfig(Preset):
    size: str = "tiny"  # a PRESETS name; width / depth / heads / mlp_width override it when set
    width: int = 0
    depth: int = 0
    heads: int = 0
    mlp_width: int = 0
    dropout: float = 0.1  # paper: 0.1 Base, 0.2 Default causal, 0.4 MaskGIT, 0.3 Large
    attn_dropout: float = 0.1
    variant: Variant = "causal"
    gmm: GMMConfig = dataclasses.field(default_factory=GMMConfig)  # its channels are the latent's d
    image_tokens: int = 0  # L = the latent grid's h * w (from the encoded artifact)
    num_classes: int = 0  # 0: no class labels (the label row is BOS)
    text_vocab: int = 0  # text conditioning: BPE vocabulary size, and
    text_tokens: int = 0  # the caption context C (both 0: no text)
    label_dropout: float = 0.1  # classifier-free guidance: the condition is dropped with this probability
    adapter: AdapterConfig | None = None  # "+A": GIVT models adapter(z) on the square latent grid (None: z itself)
    encoder: ViTConfig | None = None  # UViM stage II: cross-attend to a ViT encoding of an image (causal only)
    codebook_size: int = 0  # > 0: discrete tokens (UViM's VQ baseline): code indices in, V softmax logits out

    # Named sizes: (width, depth, heads, MLP width). base / default / large are the paper's (GIVT Tab. 5: 86M, 304M
    # and 1.67B parameters); tiny and small are MAGVLT's CPU sizes with a 4x MLP.
    PRESETS: ClassVar[dict[str, tuple[int, ...]]] = {
        "tiny": (128, 4, 4, 512),
        "small": (512, 8, 8, 2048),
        "base": (768, 12, 12, 3072),
        "default": (1024, 24, 16, 4096),
        "large": (1536, 48, 16, 8192),
    }
    SIZED: ClassVar[tuple[str, ...]] = ("width", "depth", "heads", "mlp_width")

    def __post_init__(self) -> None:
        self.check_preset()
        trunk = self.trunk  # validates width / heads / MLP width / dropouts
        if self.variant not in ("causal", "maskgit"):
            raise ValueError(f"unknown GIVT variant {self.variant!r}; choose causal or maskgit")
        if self.variant == "maskgit" and trunk.width % 2:
            raise ValueError(f"MaskGIT's concat fusion halves the width: {trunk.width} is not even")
        if min(self.image_tokens, self.num_classes, self.text_vocab, self.text_tokens) < 0:
            raise ValueError("image_tokens, num_classes, text_vocab and text_tokens must be >= 0")
        if (self.text_vocab > 0) != (self.text_tokens > 0):
            raise ValueError("text conditioning needs both text_vocab and text_tokens (or neither)")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.adapter is not None and self.image_tokens and math.isqrt(self.image_tokens) ** 2 != self.image_tokens:
            raise ValueError(f"the adapter works on a square latent grid; {self.image_tokens} tokens are not one")
        if self.encoder is not None:
            if self.variant != "causal":
                raise ValueError("an image encoder (UViM) needs the causal variant")
            if self.num_classes or self.text_tokens or self.label_dropout:
                raise ValueError("with an image encoder the image is the condition: set num_classes = 0, no text and "
                                 "label_dropout = 0")
        if self.codebook_size < 0:
            raise ValueError(f"codebook_size must be >= 0, got {self.codebook_size}")
        if self.codebook_size and (self.variant != "causal" or self.adapter is not None):
            raise ValueError("discrete tokens (codebook_size > 0) need the causal variant and no adapter")

    @property
    def trunk(self) -> TransformerConfig:
        return TransformerConfig(**self.sizes(), bias=False, gelu="tanh", dropout=self.dropout,
                                 attn_dropout=self.attn_dropout, cross_attention=self.encoder is not None)

    @property
    def num_logits(self) -> int:
        """The head's outputs per token: V code logits (discrete) or the GMM's raw parameters."""
        return self.codebook_size or self.gmm.num_logits

    @property
    def token_shape(self) -> tuple[int, ...]:
        """One sequence of tokens: (L,) code indices (discrete) or (L, d) soft tokens."""
        return (self.image_tokens,) if self.codebook_size else (self.image_tokens, self.latent_channels)

    @property
    def latent_channels(self) -> int:
        return self.gmm.channels

    @property
    def prefix_length(self) -> int:
        return 1 + self.text_tokens

    @property
    def sequence_length(self) -> int:
        """Input positions: the prefix, then L - 1 tokens (causal: the last token is never fed) or L (maskgit)."""
        return self.prefix_length + self.image_tokens - (self.variant == "causal")

    @property
    def nolabel(self) -> int:
        """The label-table row of the dropped condition; MASK, NOMASK, REPLACE follow it (maskgit)."""
        return max(self.num_classes, 1)

    def check_sizes(self) -> None:
        if self.image_tokens < 1:
            raise ValueError("GIVTConfig needs image_tokens (from the encoded artifact)")


def maskgit_mask(batch: int, length: int, generator: torch.Generator | None = None, min_masking_rate: float = 0.3,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, L) bool, True = masked: GIVT-MaskGIT's training mask (big_vision givt.py). u ~ U(0, 1 - min_masking_rate),
    rho = clip(cos(pi u / 2), 1e-6, 1), ceil(rho L) positions masked, uniformly at random: at least ~45% with 0.3."""
    u = torch.rand(batch, generator=generator, device=device) * (1 - min_masking_rate)
    counts = mask_count(mask_fraction(u, "cosine").clamp(1e-6, 1), length, "ceil")  # (B,)
    noise = torch.rand(batch, length, generator=generator, device=device)
    return random_subset(torch.ones(batch, length, dtype=torch.bool, device=device), counts, noise)


class GIVTCache(KVCache):
    """A KV cache that also knows which cached keys may be attended to: (B, max_length) bool, False at caption pads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.valid = torch.ones(self.keys.shape[1], self.keys.shape[3], dtype=torch.bool, device=self.keys.device)

    def reorder(self, index: torch.Tensor) -> None:
        super().reorder(index)
        self.valid = self.valid[index]


class GIVT(nn.Module):
    def __init__(self, cfg: GIVTConfig):
        super().__init__()
        cfg = cfg.sized()
        cfg.check_sizes()
        self.cfg = cfg
        e, d = cfg.width, cfg.latent_channels
        specials = 1 + 3 * (cfg.variant == "maskgit")  # NOLABEL [, MASK, NOMASK, REPLACE]
        self.embed_tokens = nn.Embedding(cfg.codebook_size, e) if cfg.codebook_size else nn.Linear(d, e)
        self.labels = nn.Embedding(cfg.nolabel + specials, e)
        self.text = nn.Embedding(cfg.text_vocab, e) if cfg.text_tokens else None
        self.positions = nn.Parameter(torch.empty(cfg.sequence_length, e))
        self.transformer = Transformer(cfg.trunk)
        self.norm = nn.LayerNorm(e)
        self.head = nn.Linear(e, cfg.num_logits)
        self.adapter = Adapter(cfg.adapter, d) if cfg.adapter is not None else None
        # Built last, and only when asked for: a GIVT without an encoder makes the same random draws as before.
        self.encoder = ViT(cfg.encoder) if cfg.encoder is not None else None
        widths_differ = cfg.encoder is not None and cfg.encoder.width != e
        self.encoder_proj = nn.Linear(cfg.encoder.width, e) if widths_differ else None
        self.transformer.apply(init_weights)
        if cfg.codebook_size:
            nn.init.normal_(self.embed_tokens.weight, std=1 / math.sqrt(e))
        else:
            nn.init.normal_(self.embed_tokens.weight, std=1 / math.sqrt(d))
            nn.init.zeros_(self.embed_tokens.bias)
        for table in (self.labels, self.text):
            if table is not None:
                nn.init.normal_(table.weight, std=1.0)
        nn.init.normal_(self.positions, std=1 / math.sqrt(e))
        nn.init.zeros_(self.head.weight)  # every token starts as N(0, I)
        nn.init.zeros_(self.head.bias)
        if self.encoder_proj is not None:
            nn.init.normal_(self.encoder_proj.weight, std=1 / math.sqrt(cfg.encoder.width))
            nn.init.zeros_(self.encoder_proj.bias)

    # ---- the adapter (identity without one) -------------------------------------------------------------------------

    def adapt(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, d) latents in raster order -> the tokens GIVT models: adapter(z) on the (B, d, h, w) grid, or z."""
        return z if self.adapter is None else self._on_grid(self.adapter, z)

    def unadapt(self, tokens: torch.Tensor) -> torch.Tensor:
        """The inverse of `adapt`: (B, L, d) sampled tokens -> latents for the VAE decoder."""
        return tokens if self.adapter is None else self._on_grid(self.adapter.inverse, tokens)

    @staticmethod
    def _on_grid(fn, z: torch.Tensor) -> torch.Tensor:
        b, length, d = z.shape
        side = math.isqrt(length)
        grid = z.transpose(1, 2).reshape(b, d, side, side)
        return fn(grid).flatten(2).transpose(1, 2)

    # ---- inputs ----------------------------------------------------------------------------------------------------

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, P, E) the memory the decoder cross-attends to (encoder only)."""
        memory = self.encoder(image)
        return memory if self.encoder_proj is None else self.encoder_proj(memory)

    def _memory(self, batch: int, image: torch.Tensor | None) -> torch.Tensor | None:
        """The encoded image of an encoder-decoder GIVT (None without an encoder), after checking what was passed."""
        if self.encoder is None:
            if image is not None:
                raise ValueError("this GIVT has no image encoder: pass no image")
            return None
        if image is None or image.shape[0] != batch:
            raise ValueError(f"this GIVT is conditioned on images: pass image (B = {batch}, 3, H, W)")
        return self.encode(image)

    def _condition(self, batch: int, labels: torch.Tensor | None, text: torch.Tensor | None,
                   text_len: torch.Tensor | None, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P, E) prefix embeddings (without positions) and (B, P) bool: which prefix positions are keys."""
        cfg, device = self.cfg, self.positions.device
        if cfg.num_classes and labels is None:
            raise ValueError(f"this GIVT is conditioned on {cfg.num_classes} classes: pass labels")
        if cfg.text_tokens and (text is None or text_len is None):
            raise ValueError("this GIVT is conditioned on captions: pass text and text_len")
        if labels is None:
            labels = torch.zeros(batch, dtype=torch.long, device=device)  # BOS
        elif not cfg.num_classes:
            raise ValueError("this GIVT has no classes (num_classes = 0): pass no labels")
        dropped = drop if drop is not None else torch.zeros(batch, dtype=torch.bool, device=device)
        label = self.labels(torch.where(dropped, cfg.nolabel, labels)).unsqueeze(1)  # (B, 1, E)
        if self.text is None:
            return label, torch.ones(batch, 1, dtype=torch.bool, device=device)
        if text.shape[1] != cfg.text_tokens:
            raise ValueError(f"expected {cfg.text_tokens} text ids per caption, got {text.shape[1]}")
        seen = torch.where(dropped, 0, text_len)  # a dropped caption is all pads
        valid = torch.arange(cfg.text_tokens + 1, device=device) < seen.unsqueeze(1)  # (B, C + 1)
        valid[:, -1] = True  # the label row
        return torch.cat([self.text(text), label], dim=1), valid

    def _fuse(self, z: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """MaskGIT's concat fusion: (B, L, d) tokens and (B, L) mask -> (B, L, E)."""
        nolabel, m = self.cfg.nolabel, masked.unsqueeze(-1)
        mask_row, nomask_row, replace_row = self.labels.weight[nolabel + 1:nolabel + 4]
        tokens = torch.where(m, replace_row, self.embed_tokens(z.masked_fill(m, 0)))  # masked inputs are never read
        indicator = torch.where(m, mask_row, nomask_row)
        return torch.cat([indicator[..., ::2], tokens[..., ::2]], dim=-1)

    def _mask(self, valid: torch.Tensor, start: int, queries: int) -> torch.Tensor:
        """(B, T, S) bool attention mask for queries at positions start .. start + T - 1 over keys 0 .. S - 1
        (S = start + T): valid keys only, causal for the causal variant, and every query sees itself, so that a pad
        query (whose output nothing reads) has a key and SDPA gives no NaN."""
        keys = torch.arange(start + queries, device=valid.device)  # (S,)
        position = (start + torch.arange(queries, device=valid.device)).unsqueeze(1)  # (T, 1)
        mask = valid[:, None, :start + queries]  # (B, 1, S)
        if self.cfg.variant == "causal":
            mask = mask & (keys <= position)
        return mask | (keys == position)

    # ---- training / scoring ----------------------------------------------------------------------------------------

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, text: torch.Tensor | None = None,
                text_len: torch.Tensor | None = None, *, drop: torch.Tensor | None = None,
                masked: torch.Tensor | None = None, image: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, num_logits) raw head outputs for the (B, L, d) tokens z (discrete: (B, L) long code indices):
        output i parametrises token i's GMM (discrete: its code logits).

        labels (B,) long classes (when num_classes > 0); text (B, C) ids and text_len (B,) (with text conditioning);
        drop (B,) bool: these rows get the unconditional input (CFG); masked (B, L) bool, True = masked (maskgit only,
        required there); image (B, 3, H, W) in [-1, 1] (with an encoder, required there)."""
        cfg = self.cfg
        if z.shape[1:] != cfg.token_shape:
            raise ValueError(f"expected tokens (B, {', '.join(map(str, cfg.token_shape))}), got {tuple(z.shape)}")
        if (masked is None) != (cfg.variant == "causal"):
            raise ValueError("the maskgit variant needs `masked` (B, L); the causal one takes none")
        prefix, valid = self._condition(z.shape[0], labels, text, text_len, drop)
        memory = self._memory(z.shape[0], image)  # (B, P, E) or None
        tokens = self.embed_tokens(z[:, :-1]) if masked is None else self._fuse(z, masked)
        x = torch.cat([prefix, tokens], dim=1) + self.positions  # (B, sequence_length, E)
        if self.text is None:  # nothing to block: the fast paths (causal without a mask, or no mask at all)
            h = self.transformer(x, causal=cfg.variant == "causal", memory=memory)
        else:
            valid = torch.cat([valid, valid.new_ones(x.shape[0], tokens.shape[1])], dim=1)
            h = self.transformer(x, mask=self._mask(valid, 0, x.shape[1]), memory=memory)
        first = cfg.prefix_length - (cfg.variant == "causal")  # the output that reads token 0's GMM
        return self.head(self.norm(h[:, first:]))

    # ---- causal decoding -------------------------------------------------------------------------------------------

    def new_cache(self, batch: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> GIVTCache:
        """An empty cache for `prefill` and `step`: room for the prefix and L - 1 tokens."""
        if self.cfg.variant != "causal":
            raise ValueError("only the causal GIVT decodes with a KV cache")
        cfg, weight = self.cfg, self.positions
        return GIVTCache(cfg.depth, batch, cfg.heads, cfg.sequence_length, cfg.width // cfg.heads,
                         device or weight.device, dtype or weight.dtype)

    def prefill(self, cache: GIVTCache, labels: torch.Tensor | None = None, text: torch.Tensor | None = None,
                text_len: torch.Tensor | None = None, *, drop: torch.Tensor | None = None,
                image: torch.Tensor | None = None) -> torch.Tensor:
        """Feed the condition prefix into an empty cache; return (B, num_logits): token 0's GMM (or code logits).
        With an encoder, `image` (B, 3, H, W) is encoded here, once: its keys / values stay in the cache."""
        if cache.length:
            raise ValueError(f"prefill needs an empty cache; this one holds {cache.length} positions")
        batch = cache.keys.shape[1]
        prefix, valid = self._condition(batch, labels, text, text_len, drop)
        cache.valid[:, :valid.shape[1]] = valid
        return self._decode(cache, prefix, self._memory(batch, image))

    def step(self, cache: GIVTCache, z: torch.Tensor) -> torch.Tensor:
        """Feed the next (B, T, d) tokens ((B, T) long codes) after what the cache holds; return (B, num_logits):
        the next token's GMM (or code logits)."""
        if cache.length < self.cfg.prefix_length:
            raise ValueError("the cache holds no condition: call prefill first")
        return self._decode(cache, self.embed_tokens(z))

    def _decode(self, cache: GIVTCache, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        start, t = cache.length, x.shape[1]
        if start + t > self.cfg.sequence_length:
            raise ValueError(f"the sequence holds {self.cfg.sequence_length} positions; {start + t} were asked for")
        mask = self._mask(cache.valid, start, t) if self.text is not None else None
        h = self.transformer(x + self.positions[start:start + t], mask=mask, causal=True, cache=cache, memory=memory)
        return self.head(self.norm(h[:, -1]))
