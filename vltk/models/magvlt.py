"""MAGVLT: one bidirectional transformer over image tokens and text tokens (MAGVLT §3.1-3.2; magvlt maskgit.py).

    model = MAGVLT(MAGVLTConfig(size="tiny", image_vocab=512, text_vocab=1024, image_tokens=64, text_tokens=24))
    out = model(Inputs(layout="t2i", image=codes, image_masked=m_img, text=ids, text_masked=m_txt, text_len=n_txt),
                image_query=m_img)              # logits only where they are needed
    out.image_logits                            # (m_img.sum(), image_vocab)

Two sequence layouts (N image tokens, C text tokens; L = 4 + N + C):
    t2i          [BOC, BOT, text(C), BOG, BOI, image(N)]      text first: text-to-image
    i2t, it2it   [BOC, BOI, image(N), BOG, BOT, text(C)]      image first: image-to-text and joint; BOT at 3 + N
MixSel's selection token (LEFT / RIGHT / TOP / BOTTOM) takes the BOG slot.

Embeddings: one joint table (image code k -> row k, text id j -> row image_vocab + j) plus a small table of special
tokens, with two mask tokens (one per modality). Positions are learned per modality; the four structural tokens use
rows 0..3 of a third "special" position table. `official_positions` keeps the released code's quirk: a masked token
also adds special-position row k (k = its index within its modality), which overlaps the structural rows. Turn it off
for separate tables (then the weights are not the official checkpoints' layout).

Attention is bidirectional with padding control: text positions at or beyond the text length are blocked as keys (at
inference the length is the predicted one), in t2i also as queries, and in the image-first layout the BOT query sees no
text (the length head must not read the pads). A row left with no key attends to itself. In the official mask only
BOT's own row is blocked: image tokens attend to the visible text keys, whose count is the true length, so from the
second layer on BOT reads the length through them. Trained so, the length head learns to copy the length it is shown
(on the demo: 75% of val captions at 2,400 steps, 100% with three times the I2T steps) and, at inference, where the
text is all masked over the whole context, predicts off its training distribution (one length for 92% of the images,
a plausible one for 42%). `blind_prefix` (the default) closes the leak: in rows whose image is given (I2T: no image
token masked) nothing before the text attends to the text, so BOT sees the image alone at every depth, in training and
at inference alike; the text still attends to everything. Rows with masked image tokens (IT2IT, the null image of
condition dropout) keep the official mask, since their image is generated from the text. `blind_prefix = false` is
the official mask (for the released checkpoints).

The head is MaskGIT's MLM head against the tied joint table, restricted to the modality's own vocabulary; the length
head reads BOT (class c = length c + 1, EOS included). There is no final LayerNorm after the last block.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from vltk.models.layers import GeneratorConfig, MLMHead, Transformer, init_weights

Layout = Literal["t2i", "i2t"]
# The special-token table (kakaobrain/magvlt models/utils.py): the basic six, then MixSel's four selection tokens.
BOI, BOT, BOC, BOG, MASK_IMAGE, MASK_TEXT, LEFT, RIGHT, TOP, BOTTOM = range(10)
BASIC_SPECIALS, MIXSEL_SPECIALS = 6, 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class MAGVLTConfig(GeneratorConfig):
    official_positions: bool = True  # the released code's extra special-position row on masked tokens
    mixsel_tokens: bool = True  # the four selection tokens exist (the released checkpoints have them)
    blind_prefix: bool = True  # I2T rows: the image and BOT read no text (no length leak); false = the official mask

    @property
    def sequence_length(self) -> int:
        return 4 + self.image_tokens + self.text_tokens

    @property
    def eos_id(self) -> int:
        """EOS (= the padding) is the text vocabulary's last id: vltk.text.bpe.BPETokenizer appends SOT then EOT after
        the merges, for a trained BPE and for CLIP's vocabulary alike (CLIP's EOT is 49407 of 49408)."""
        return self.text_vocab - 1


@dataclasses.dataclass(frozen=True)
class Slots:
    """Where things sit in a layout's sequence."""

    image: slice
    text: slice
    structural: tuple[int, int, int, int]  # the two prefix and the two infix positions
    bot: int | None  # the length head's position (image-first layout only)


def slots(layout: Layout, image_tokens: int, text_tokens: int) -> Slots:
    n, c = image_tokens, text_tokens
    if layout == "t2i":
        return Slots(image=slice(4 + c, 4 + c + n), text=slice(2, 2 + c), structural=(0, 1, 2 + c, 3 + c), bot=None)
    if layout == "i2t":
        return Slots(image=slice(2, 2 + n), text=slice(4 + n, 4 + n + c), structural=(0, 1, 2 + n, 3 + n), bot=3 + n)
    raise ValueError(f"unknown layout {layout!r}; MAGVLT has 't2i' (text first) and 'i2t' (image first)")


def structural_tokens(layout: Layout, selector: torch.Tensor) -> torch.Tensor:
    """(B, 4) special ids of the structural slots; `selector` (B,) fills the BOG slot (BOG, or a MixSel token)."""
    first, second = (BOT, BOI) if layout == "t2i" else (BOI, BOT)
    b = selector.shape[0]
    fixed = lambda token: torch.full((b,), token, dtype=torch.long, device=selector.device)  # noqa: E731
    return torch.stack([fixed(BOC), fixed(first), selector.long(), fixed(second)], dim=1)


def attention_mask(layout: Layout, text_len: torch.Tensor, image_tokens: int, text_tokens: int,
                   blind: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, L) bool, True where query (row) may attend to key (column); see the module docstring for the rules.
    `blind` (B,) bool: image-first rows where nothing before the text may attend to the text (`blind_prefix`)."""
    s = slots(layout, image_tokens, text_tokens)
    b, length = text_len.shape[0], 4 + image_tokens + text_tokens
    # Built without in-place writes: inductor's CPU code generation (torch 2.14) fails on an in-place t2i branch.
    position = torch.arange(length, device=text_len.device)  # (L,)
    in_text = (position >= s.text.start) & (position < s.text.stop)  # (L,)
    pad = in_text & (position - s.text.start >= text_len.unsqueeze(1))  # (B, L): text positions at/after the length
    mask = ~pad.unsqueeze(1)  # (B, 1, L): pads are never keys
    if layout == "t2i":
        mask = mask & ~pad.unsqueeze(2)  # (B, L, L): pad queries see nothing (then only themselves, below)
    else:
        mask = (mask & ~((position == s.bot).unsqueeze(1) & in_text)).expand(b, length, length)  # BOT reads no text
        if blind is not None:  # (B, L, L): the blind rows' prefix queries read no text key
            prefix = position < s.text.start  # (L,)
            mask = mask & ~(blind.view(b, 1, 1) & prefix.view(1, length, 1) & in_text.view(1, 1, length))
    empty = ~mask.any(dim=2)  # (B, L)
    return mask | (empty.unsqueeze(2) & torch.eye(length, dtype=torch.bool, device=text_len.device))


@dataclasses.dataclass
class Inputs:
    """One batch in one layout. Masked positions may hold any valid id (it is not read)."""

    layout: Layout
    image: torch.Tensor  # (B, N) long codes, raster order
    image_masked: torch.Tensor  # (B, N) bool
    text: torch.Tensor  # (B, C) long ids, EOS-padded
    text_masked: torch.Tensor  # (B, C) bool
    text_len: torch.Tensor  # (B,) long: text keys at >= text_len are blocked
    selector: torch.Tensor | None = None  # (B,) long special id for the BOG slot; None = BOG


def empty_caption(text: torch.Tensor, drop: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, C) text with the rows where the (B,) bool `drop` holds replaced by the empty caption, what the tokenizer
    makes of "": no SOT, EOS at position 0 and EOS padding (n_txt 1). MAGVLT's and ARGVLT's null caption alike."""
    return torch.where(drop.unsqueeze(1), eos_id, text)


def drop_condition(x: Inputs, drop: torch.Tensor, eos_id: int) -> Inputs:
    """x with the condition of the rows where the (B,) bool `drop` holds replaced by the null condition, the input
    classifier-free guidance trains and samples with (Ho & Salimans 2022; Muse, Chang et al. 2023, drops the text).

    Text-first layout (T2I, inpainting): the empty caption (`empty_caption`), text_len 1 (so only its EOS is a key).
    Image-first layout (I2T, infilling): the null image, every image token masked (the ids there are not read). The
    other rows are returned unchanged.
    """
    if x.layout == "t2i":
        text = empty_caption(x.text, drop, eos_id)  # (B, C)
        return dataclasses.replace(x, text=text, text_len=torch.where(drop, 1, x.text_len))
    return dataclasses.replace(x, image_masked=x.image_masked | drop.unsqueeze(1))


@dataclasses.dataclass
class Outputs:
    image_logits: torch.Tensor | None = None  # (image_query.sum(), image_vocab), row-major order of the query
    text_logits: torch.Tensor | None = None  # (text_query.sum(), text_vocab)
    length_logits: torch.Tensor | None = None  # (B, text_tokens): class c = length c + 1


def _drop_pad_columns(x: Inputs, text_query: torch.Tensor | None) -> tuple[Inputs, torch.Tensor | None]:
    """x and the (B, C) text query cut to the text columns that some row's text_len reaches or the query asks for."""
    c = x.text.shape[1]
    needed = x.text_len.max().clamp(min=1)
    if text_query is not None:  # 1 + the last queried column (0 when none is)
        needed = torch.maximum(needed, (text_query.any(dim=0) * torch.arange(1, c + 1, device=needed.device)).max())
    width = int(needed)  # one host sync
    if width >= c:
        return x, text_query
    x = dataclasses.replace(x, text=x.text[:, :width], text_masked=x.text_masked[:, :width])
    return x, None if text_query is None else text_query[:, :width]


class MAGVLT(nn.Module):
    def __init__(self, cfg: MAGVLTConfig):
        super().__init__()
        cfg = cfg.sized()
        cfg.check_sizes()
        self.cfg = cfg
        d, n, c = cfg.width, cfg.image_tokens, cfg.text_tokens
        self.tokens = nn.Embedding(cfg.image_vocab + cfg.text_vocab, d)
        self.specials = nn.Embedding(MIXSEL_SPECIALS if cfg.mixsel_tokens else BASIC_SPECIALS, d)
        self.pos_image = nn.Parameter(torch.empty(n, d))
        self.pos_text = nn.Parameter(torch.empty(c, d))
        self.pos_special = nn.Parameter(torch.empty(4 + n + c if cfg.official_positions else 4, d))
        self.transformer = Transformer(cfg.trunk)
        self.head = MLMHead(d, cfg.image_vocab + cfg.text_vocab)
        self.length_head = nn.Linear(d, c, bias=False)
        self.apply(init_weights)
        for table in (self.pos_image, self.pos_text, self.pos_special):
            nn.init.normal_(table, std=0.02)

    def _embed_modality(self, ids: torch.Tensor, masked: torch.Tensor, offset: int, mask_token: int,
                        positions: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D): token (or mask token, + the quirk's special position) + modality position."""
        tokens = self.tokens(torch.where(masked, 0, ids) + offset)
        mask = self.specials.weight[mask_token]
        if self.cfg.official_positions:
            mask = mask + self.pos_special[: ids.shape[1]]  # (T, D)
        return torch.where(masked.unsqueeze(-1), mask, tokens) + positions

    def embed(self, x: Inputs) -> torch.Tensor:
        """(B, L, D) input embeddings in x.layout."""
        cfg = self.cfg
        image = self._embed_modality(x.image, x.image_masked, 0, MASK_IMAGE, self.pos_image)
        positions = self.pos_text[: x.text.shape[1]]  # a sampler may pass fewer columns than the context
        text = self._embed_modality(x.text, x.text_masked, cfg.image_vocab, MASK_TEXT, positions)
        selector = x.selector if x.selector is not None else torch.full_like(x.text_len, BOG)
        struct = self.specials(structural_tokens(x.layout, selector)) + self.pos_special[:4]  # (B, 4, D)
        first, second = (text, image) if x.layout == "t2i" else (image, text)
        return torch.cat([struct[:, :2], first, struct[:, 2:], second], dim=1)

    def forward(self, x: Inputs, image_query: torch.Tensor | None = None, text_query: torch.Tensor | None = None,
                length: bool = False) -> Outputs:
        """Logits at the image / text positions where the (B, N) / (B, C) bool queries are True, and optionally the
        length logits (image-first layout only). Computing only what is asked keeps the big vocabulary cheap.

        The text may be shorter than the context (C' <= C columns, every text_len <= C'). Pad columns past the longest
        text_len and the last queried column are dropped here before the trunk: no key may see them and no output
        reads them, so every output is the same and short captions cost less (training and sampling alike). Under
        torch.compile the columns stay, which keeps the shapes static."""
        cfg = self.cfg
        if not torch.compiler.is_compiling():
            x, text_query = _drop_pad_columns(x, text_query)
        c = x.text.shape[1]
        s = slots(x.layout, cfg.image_tokens, c)
        blind = ~x.image_masked.any(dim=1) if cfg.blind_prefix and x.layout == "i2t" else None  # (B,) image given
        mask = attention_mask(x.layout, x.text_len, cfg.image_tokens, c, blind)
        h = self.transformer(self.embed(x), mask=mask)  # (B, L, D)
        out = Outputs()
        table = self.tokens.weight
        if image_query is not None:
            out.image_logits = self.head(h[:, s.image][image_query], table, slice(0, cfg.image_vocab))
        if text_query is not None:
            out.text_logits = self.head(h[:, s.text][text_query], table, slice(cfg.image_vocab, None))
        if length:
            if s.bot is None:
                raise ValueError("the length head reads BOT, which only the image-first layout ('i2t') has")
            out.length_logits = self.length_head(h[:, s.bot])
        return out
