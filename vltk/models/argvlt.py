"""ARGVLT: MAGVLT's autoregressive twin, one causal transformer over text and image tokens (MAGVLT §4.1, App. A).

    model = ARGVLT(ARGVLTConfig(size="tiny", image_vocab=512, text_vocab=1024, image_tokens=64, text_tokens=24))
    out = model("t2i", codes, ids, image_query=torch.ones_like(codes, dtype=torch.bool))
    out.image_logits                             # (B * 64, 512): image token k predicted from everything before it
    cache = model.new_cache(batch=codes.shape[0])
    prefix = sequence("t2i", codes, ids)[:, :2 + 24]     # [BOT, text(24), BOI]
    logits = model.step(cache, "t2i", prefix)    # (B, 512): the first image token; feed the sampled one next

Two orders (N image tokens, C text tokens; L = 2 + N + C), the condition first and the generated modality second:
    t2i    [BOT, text(C), BOI, image(N)]
    i2t    [BOI, image(N), BOT, text(C)]
A sequence is held as ids in the sense of the slot they sit in: special ids (BOI, BOT, as in MAGVLT's special table)
at the two begin slots, BPE ids in the text slots, VQ codes in the image slots. The mask is causal over the whole
sequence and the output at position p predicts the token at p + 1, so each segment's begin token predicts that
segment's first token. Text pads stay in the sequence as keys (as minDALL-E keeps them); objectives leave them out of
the loss. The last token predicts nothing and is not fed.

Embeddings: the joint token table shared with MAGVLT (image code k -> row k, text id j -> row image_vocab + j), a
two-row table of begin tokens, and learned positions per modality plus one per begin slot (the first, and the one
between the segments). A final LayerNorm follows the trunk (the GPT blocks of the minDALL-E lineage have one), then
MAGVLT's tied MLM head restricted to the predicted token's vocabulary, so that the two models have the same size.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from vltk.models.layers import GeneratorConfig, KVCache, MLMHead, Transformer, init_weights
from vltk.models.magvlt import BOI, BOT, MAGVLTConfig, Outputs, empty_caption

Order = Literal["t2i", "i2t"]
Kind = Literal["begin", "image", "text"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ARGVLTConfig(GeneratorConfig):
    eos_id = MAGVLTConfig.eos_id  # the text vocabulary's last id: the same vltk.text.bpe layout as MAGVLT's

    @property
    def sequence_length(self) -> int:
        return 2 + self.image_tokens + self.text_tokens

    @property
    def null_image_id(self) -> int:
        """The joint-table row fed in every image slot of a null image: the text vocabulary's SOT (EOS - 1), which
        vltk's rows never hold (no start token) and the model never has to predict.

        Why not a code or a new row: the image slots are targets in the t2i order and conditions in the i2t order, so
        a real code (say 0) would also mean "an image of code-0 tokens", which the t2i order teaches; and a learned row
        of its own would change the parameters, the init's random draws and every checkpoint of a model trained
        without dropout. SOT's row is otherwise only an output row of the tied text head (a class never drawn)."""
        return self.image_vocab + self.eos_id - 1


@dataclasses.dataclass(frozen=True)
class Slots:
    """Where things sit in an order's sequence."""

    begin: tuple[int, int]  # the first begin token, and the one between the segments
    image: slice
    text: slice

    def regions(self) -> list[tuple[Kind, slice]]:
        """The four contiguous regions of the sequence, in sequence order."""
        begins: list[tuple[Kind, slice]] = [("begin", slice(p, p + 1)) for p in self.begin]
        return sorted([*begins, ("image", self.image), ("text", self.text)], key=lambda region: region[1].start)

    def kind(self, position: int) -> Kind | None:
        """What sits at `position` (None past the end)."""
        return next((kind for kind, region in self.regions() if region.start <= position < region.stop), None)


def slots(order: Order, image_tokens: int, text_tokens: int) -> Slots:
    n, c = image_tokens, text_tokens
    if order == "t2i":
        return Slots(begin=(0, 1 + c), image=slice(2 + c, 2 + c + n), text=slice(1, 1 + c))
    if order == "i2t":
        return Slots(begin=(0, 1 + n), image=slice(1, 1 + n), text=slice(2 + n, 2 + n + c))
    raise ValueError(f"unknown order {order!r}; ARGVLT has 't2i' (text first) and 'i2t' (image first)")


def predictors(region: slice) -> slice:
    """The outputs that predict the tokens of `region`: each token is predicted by the output just before it."""
    return slice(region.start - 1, region.stop - 1)


def sequence(order: Order, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(B, L) long ids of the whole sequence from (B, N) codes and (B, C) EOS-padded text."""
    s = slots(order, image.shape[1], text.shape[1])
    ids = torch.empty(image.shape[0], 2 + image.shape[1] + text.shape[1], dtype=torch.long, device=image.device)
    ids[:, s.begin[0]], ids[:, s.begin[1]] = (BOT, BOI) if order == "t2i" else (BOI, BOT)
    ids[:, s.image], ids[:, s.text] = image, text
    return ids


def drop_condition(order: Order, image: torch.Tensor, text: torch.Tensor, drop: torch.Tensor,
                   cfg: ARGVLTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) codes and (B, C) text with the condition of the rows where the (B,) bool `drop` holds replaced by the null
    condition, what classifier-free guidance (Ho & Salimans 2022) trains and samples with; the other rows unchanged.

    t2i (text first): the empty caption, as MAGVLT's (`vltk.models.magvlt.empty_caption`): EOS then EOS padding,
    which ARGVLT reads as keys like any caption's pads. i2t (image first): the null image, `cfg.null_image_id` in
    every image slot; the ids there are then no codes, so the objective takes no image loss on them."""
    if order == "t2i":
        return image, empty_caption(text, drop, cfg.eos_id)
    return torch.where(drop.unsqueeze(1), cfg.null_image_id, image), text


class ARGVLT(nn.Module):
    def __init__(self, cfg: ARGVLTConfig):
        super().__init__()
        cfg = cfg.sized()
        cfg.check_sizes()
        self.cfg = cfg
        d = cfg.width
        self.tokens = nn.Embedding(cfg.image_vocab + cfg.text_vocab, d)
        self.specials = nn.Embedding(2, d)  # BOI = 0, BOT = 1
        self.pos_image = nn.Parameter(torch.empty(cfg.image_tokens, d))
        self.pos_text = nn.Parameter(torch.empty(cfg.text_tokens, d))
        self.pos_begin = nn.Parameter(torch.empty(2, d))
        self.transformer = Transformer(cfg.trunk)
        self.norm = nn.LayerNorm(d)
        self.head = MLMHead(d, cfg.image_vocab + cfg.text_vocab)
        self.apply(init_weights)
        for table in (self.pos_image, self.pos_text, self.pos_begin):
            nn.init.normal_(table, std=0.02)

    def embed(self, order: Order, ids: torch.Tensor, *, start: int = 0,
              image_positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) sequence ids at positions start .. start + T - 1 of `order`'s sequence -> (B, T, D) embeddings.

        image_positions (B, N) long: the position id of each image slot's token (default: the slot's raster index)."""
        cfg = self.cfg
        if image_positions is None:
            image_positions = torch.arange(cfg.image_tokens, device=ids.device).expand(ids.shape[0], -1)
        end = start + ids.shape[1]
        parts = []
        for kind, region in slots(order, cfg.image_tokens, cfg.text_tokens).regions():
            low, high = max(start, region.start), min(end, region.stop)
            if low >= high:
                continue
            piece = ids[:, low - start:high - start]  # (B, t)
            local = slice(low - region.start, high - region.start)  # the index within the region
            if kind == "image":
                parts.append(self.tokens(piece) + self.pos_image[image_positions[:, local]])
            elif kind == "text":
                parts.append(self.tokens(piece + cfg.image_vocab) + self.pos_text[local])
            else:
                parts.append(self.specials(piece) + self.pos_begin[0 if low == 0 else 1])
        return torch.cat(parts, dim=1)

    def _logits(self, h: torch.Tensor, kind: Kind) -> torch.Tensor:
        """(M, D) trunk outputs -> (M, V) logits over the vocabulary of `kind` (image or text) only."""
        v = self.cfg.image_vocab
        return self.head(self.norm(h), self.tokens.weight, slice(0, v) if kind == "image" else slice(v, None))

    def forward(self, order: Order, image: torch.Tensor, text: torch.Tensor, *,
                image_query: torch.Tensor | None = None, text_query: torch.Tensor | None = None,
                image_positions: torch.Tensor | None = None) -> Outputs:
        """Next-token logits for the image / text targets where the (B, N) / (B, C) bool queries are True, in the
        queries' row-major order. Computing only what is asked keeps the big vocabulary cheap.

        image_positions (B, N) long, default arange(N): the position id of the code fed in each image slot. AR
        inpainting feeds the known codes first with their true position ids, then the masked ones in raster order.
        The output at image slot i has seen the codes and position ids of slots 0..i only: it predicts the code of
        slot i + 1 without being told where that code goes (it learns where once the code is fed, with its id). In
        raster order (training) the place is implied; in any other order a model trained in raster order must infer
        it, which AR inpainting (feat/eval `sample_1d_fast_it2i`) relies on."""
        cfg = self.cfg
        s = slots(order, cfg.image_tokens, cfg.text_tokens)
        ids = sequence(order, image, text)[:, :-1]  # (B, L - 1): the last token predicts nothing
        h = self.transformer(self.embed(order, ids, image_positions=image_positions), causal=True)  # (B, L - 1, D)
        out = Outputs()
        if image_query is not None:
            out.image_logits = self._logits(h[:, predictors(s.image)][image_query], "image")
        if text_query is not None:
            out.text_logits = self._logits(h[:, predictors(s.text)][text_query], "text")
        return out

    def new_cache(self, batch: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for `step`: room for L - 1 positions (the last token is never fed)."""
        return self.transformer.new_cache(batch, self.cfg.sequence_length - 1, device, dtype)

    def step(self, cache: KVCache, order: Order, ids: torch.Tensor, *,
             image_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Feed the next T tokens of `order`'s sequence, (B, T) ids from position `cache.length` on, through the
        cache; return the (B, V) logits of the token after them, over that token's vocabulary.

        The token after them must be an image or a text token: a begin token is fixed by the order, so a block that
        ends just before one must include it (e.g. the prefix [BOT, text, BOI] of t2i). image_positions as `forward`.
        """
        cfg = self.cfg
        s = slots(order, cfg.image_tokens, cfg.text_tokens)
        start = cache.length
        kind = s.kind(start + ids.shape[1])
        if kind not in ("image", "text"):
            raise ValueError(f"position {start + ids.shape[1]} of {order} is {kind or 'past the end'}, not a token "
                             "to predict: feed the begin token with the block before it")
        x = self.embed(order, ids, start=start, image_positions=image_positions)  # (B, T, D)
        h = self.transformer(x, causal=True, cache=cache)  # (B, T, D)
        return self._logits(h[:, -1], kind)
