"""Shared transformer layers: pre-LN blocks with SDPA attention, a KV cache, the tied MLM head, and the init.

    trunk = Transformer(TransformerConfig(width=1024, depth=24, heads=8))
    h = trunk(x, mask=mask)                   # x (B, L, D); mask (B, L, L) bool, True = may attend
    h = trunk(x, causal=True)                 # causal, without building a mask
    cache = trunk.new_cache(batch=4, max_length=324)
    h = trunk(x_new, cache=cache)             # causal decoding: appends the new keys / values, attends to the prefix
    trunk = Transformer(TransformerConfig(width=1024, depth=24, heads=16, cross_attention=True))
    h = trunk(x, causal=True, memory=m)       # m (B, P, D): every block also cross-attends to it

The blocks follow MAGVLT's `Transformer1d` (kakaobrain/magvlt magvlt/models/stage2/layers.py): LayerNorm before
attention and before the MLP, q/k/v and output projections with biases, attention and residual dropout, an MLP
d -> 4d -> d with exact GELU. The q, k and v projections are one fused Linear (the same function; one matmul instead of
three). GIVT's blocks (big_vision givt.py) are the same with three switches: no biases in the attention and the block
LayerNorms, a tanh GELU, and an explicit MLP width.

`cross_attention` adds, after self-attention, big_vision's encoder-decoder sub-layer (givt.py `EncoderDecoderBlock`:
LayerNorm2 -> CrossAttn(query x, keys / values the encoded memory) -> dropout -> residual; GIVT §4.2 "insert a
cross-attention layer after each self-attention layer"), with the block's bias switch. In causal decoding the memory's
keys / values are computed once, at the step that passes the memory (the prefill), and kept in the KV cache.
Without the switch a block has exactly the modules it always had, so seeded models and their outputs do not change.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal, Self

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    mlp_width: int = 0  # the MLP's hidden width; 0 = mlp_ratio * width (GIVT-Large: 8192 for 1536)
    bias: bool = True  # biases in the q/k/v and output projections and the block LayerNorms (GIVT: none)
    gelu: Literal["none", "tanh"] = "none"  # torch's `approximate`: exact, or the tanh form (Flax's default; GIVT)
    dropout: float = 0.1  # residual dropout, after attention and after the MLP
    attn_dropout: float = 0.1  # on the attention probabilities
    cross_attention: bool = False  # a cross-attention sub-layer over a memory (B, P, width) in every block
    norm_eps: float = 1e-5  # the block LayerNorms' epsilon (torch's default; timm's and Flax's ViTs use 1e-6)

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.heads, self.mlp_ratio) < 1 or self.mlp_width < 0:
            raise ValueError("width, depth, heads and mlp_ratio must be >= 1 and mlp_width >= 0")
        if self.gelu not in ("none", "tanh"):
            raise ValueError(f"gelu must be 'none' (exact) or 'tanh', got {self.gelu!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not (0 <= self.dropout < 1 and 0 <= self.attn_dropout < 1):
            raise ValueError("dropout and attn_dropout must be in [0, 1)")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")

    @property
    def hidden(self) -> int:
        return self.mlp_width or self.mlp_ratio * self.width


class Preset:
    """A config mixin for named model sizes: each of the fields SIZED (width, depth, ...) left 0 means "the preset's",
    whose values are PRESETS[size], one per field in order. The config itself is never mutated: `sized()` writes them
    out."""

    PRESETS: ClassVar[dict[str, tuple[int, ...]]]
    SIZED: ClassVar[tuple[str, ...]]

    def check_preset(self) -> None:
        if self.size not in self.PRESETS:
            raise ValueError(f"unknown model size {self.size!r}; choose from {', '.join(self.PRESETS)}")

    def sizes(self) -> dict[str, int]:
        """Each of SIZED: the field where it is set (> 0), else the size preset's."""
        return {name: getattr(self, name) or value for name, value in zip(self.SIZED, self.PRESETS[self.size])}

    def sized(self) -> Self:
        """This config with the preset's sizes written out: what a model is built from and what a generator artifact
        records."""
        return dataclasses.replace(self, **self.sizes())


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorConfig(Preset):
    """What every token generator's config has: a named size with overrides, dropouts, and the vocabularies and
    sequence sizes that come from the encoded artifact's manifest (`vltk train-gen` fills them)."""

    size: str = "tiny"  # a PRESETS name; width / depth / heads override it when set
    width: int = 0
    depth: int = 0
    heads: int = 0
    dropout: float = 0.1  # residual (paper: 0.1)
    attn_dropout: float = 0.1  # attention probabilities (paper: 0.1)
    image_vocab: int = 0  # codebook size
    text_vocab: int = 0  # BPE vocabulary size
    image_tokens: int = 0  # grid_size ** 2
    text_tokens: int = 0  # text context length

    # Named generator sizes: (width, depth, heads). base / large are the paper's (MAGVLT Tab. 8); tiny and small are
    # for CPUs and tests.
    PRESETS: ClassVar[dict[str, tuple[int, ...]]] = {
        "tiny": (128, 4, 4),
        "small": (512, 8, 8),
        "base": (1024, 24, 8),
        "large": (1280, 36, 10),
    }
    SIZED: ClassVar[tuple[str, ...]] = ("width", "depth", "heads")

    def __post_init__(self) -> None:
        self.check_preset()
        self.trunk  # validates width / heads / dropouts

    @property
    def trunk(self) -> TransformerConfig:
        return TransformerConfig(**self.sizes(), dropout=self.dropout, attn_dropout=self.attn_dropout)

    def check_sizes(self) -> None:
        missing = [k for k in ("image_vocab", "text_vocab", "image_tokens", "text_tokens") if getattr(self, k) < 1]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {', '.join(missing)} (from the encoded artifact)")


class KVCache:
    """Keys and values of every layer for causal decoding: (depth, B, heads, max_length, head_dim) each; with
    cross-attention also the memory's, per layer: memory[layer] = ((B, heads, P, head_dim) keys, values)."""

    def __init__(self, depth: int, batch: int, heads: int, max_length: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (depth, batch, heads, max_length, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far
        self.memory: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # filled by the first cross-attending call

    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, T, hd) new keys / values of `layer` after the prefix; return the prefix + them."""
        end = self.length + keys.shape[2]
        if end > self.keys.shape[3]:
            raise ValueError(f"the KV cache holds {self.keys.shape[3]} positions; {end} were asked for")
        self.keys[layer, :, :, self.length:end] = keys
        self.values[layer, :, :, self.length:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B',), e.g. the survivors of a beam or of finished captions."""
        self.keys, self.values = self.keys[:, index], self.values[:, index]
        self.memory = {layer: (k[index], v[index]) for layer, (k, v) in self.memory.items()}


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int):
        super().__init__()
        self.heads, self.layer, self.attn_dropout = cfg.heads, layer, cfg.attn_dropout
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool, cache: KVCache | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        if cache is not None:
            start = cache.length
            k, v = cache.append(self.layer, k, v)  # (B, H, start + T, hd)
            if mask is None and causal and t > 1:
                # New query i sits at position start + i and may see keys 0 .. start + i.
                mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
            causal = False  # a single new query may see the whole prefix; longer blocks got the mask above
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, 1, T, S): one mask for every head
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class CrossAttention(nn.Module):
    """Queries from the sequence, keys / values from a memory (B, P, width) that every query may see (no mask)."""

    def __init__(self, cfg: TransformerConfig, layer: int):
        super().__init__()
        self.heads, self.layer, self.attn_dropout = cfg.heads, layer, cfg.attn_dropout
        self.q = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.kv = nn.Linear(cfg.width, 2 * cfg.width, bias=cfg.bias)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). With a cache, the memory's keys / values are projected when `memory` is given
        and stored; later calls pass memory=None and read them back."""
        b, t, d = x.shape
        if memory is not None:
            p = memory.shape[1]
            k, v = self.kv(memory).view(b, p, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, P, hd)
            if cache is not None:
                cache.memory[self.layer] = (k, v)
        elif cache is not None and self.layer in cache.memory:
            k, v = cache.memory[self.layer]
        else:
            raise ValueError("this transformer cross-attends: pass memory (B, P, D), or a cache prefilled with one")
        q = self.q(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.width, cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.width)
        self.gelu = cfg.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.gelu))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, bias=cfg.bias)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, bias=cfg.bias)
        self.attn, self.mlp = Attention(cfg, layer), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.cross_attention:  # registered last: a model without it keeps its parameter order and init draws
            self.norm_cross = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, bias=cfg.bias)
            self.cross = CrossAttention(cfg, layer)
        else:
            self.cross = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: KVCache | None = None, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask, causal, cache))
        if self.cross is not None:
            x = x + self.drop(self.cross(self.norm_cross(x), memory, cache))
        return x + self.drop(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of pre-LN blocks, without a final LayerNorm (MAGVLT has none; models that want one add it)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.depth))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: KVCache | None = None, memory: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). mask: (B, T, S) or (T, S) bool, True = may attend. With a cache, S = prefix + T.
        memory (B, P, D): what the blocks cross-attend to (cross_attention only; with a cache, once, at the prefill)."""
        if memory is not None and not self.cfg.cross_attention:
            raise ValueError("this transformer has no cross-attention: pass no memory")
        for block in self.blocks:
            x = block(x, mask, causal, cache, memory)
        if cache is not None:
            cache.length += x.shape[1]
        return x

    def new_cache(self, batch: int, max_length: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        weight = self.blocks[0].attn.qkv.weight
        return KVCache(self.cfg.depth, batch, self.cfg.heads, max_length, self.cfg.width // self.cfg.heads,
                       device or weight.device, dtype or weight.dtype)


class MLMHead(nn.Module):
    """BERT / MaskGIT output head: Linear -> GELU -> LayerNorm, then logits against the tied embedding table plus a
    bias."""

    def __init__(self, width: int, vocab: int):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, h: torch.Tensor, table: torch.Tensor, rows: slice) -> torch.Tensor:
        """(..., D) -> (..., rows) logits over the embedding rows `rows` only (one modality's vocabulary)."""
        h = self.norm(F.gelu(self.dense(h)))
        return F.linear(h, table[rows], self.bias[rows])


def init_weights(module: nn.Module) -> None:
    """Linear and Embedding weights N(0, 0.02), biases 0, LayerNorm (1, 0) (kakaobrain/magvlt transformers.py).
    Use with `apply`."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
