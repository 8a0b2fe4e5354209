"""ARGVLT's samplers: token-by-token decoding through the KV cache (REFERENCE.md §2).

    cfg = ARGVLTSampling()                                            # image tau 1 / top-k 256, text tau 0.5 / top-k 32
    g = torch.Generator().manual_seed(0)
    codes = generate_images(model, text, cfg, g)                      # (B, N) VQ codes, N model steps
    ids, lengths = generate_text(model, codes, cfg, g, eos_id=tokenizer.eos_id)   # (B, C) EOS-padded, (B,) n_txt
    filled = inpaint(model, codes, masked, text, cfg, g)              # (B, N); codes where ~masked come back unchanged

Every step divides the logits by the temperature, keeps the top-k, then the top-p nucleus, and draws from the
softmax, all in float32 (`vltk.sampling.common`), whatever precision the model ran in. The samplers put the model in
eval mode (as MAGVLT's do); on a GPU the caller may wrap them in autocast, and the cache then stores keys and values in
the autocast dtype.
"""

from __future__ import annotations

import dataclasses

import torch

from vltk.models.argvlt import ARGVLT, sequence
from vltk.models.layers import KVCache
from vltk.sampling.common import filter_logits, sample


@dataclasses.dataclass(frozen=True, kw_only=True)
class ARGVLTSampling:
    """Per-modality filters. Image: tau 1.0 and top-k 256, the minDALL-E defaults the official AR sampler helper
    uses; text: the eval config's tau 0.5 and top-k 32 (REFERENCE.md §2). None turns a filter off."""

    image_temperature: float = 1.0
    image_top_k: int | None = 256
    image_top_p: float | None = None
    text_temperature: float = 0.5
    text_top_k: int | None = 32
    text_top_p: float | None = None

    def __post_init__(self) -> None:
        if min(self.image_temperature, self.text_temperature) <= 0:
            raise ValueError("temperatures must be > 0 (use top_k=1 for greedy decoding)")


def draw(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
         generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) ids drawn from softmax(filter(logits / temperature)), in float32."""
    return sample(filter_logits(logits.float() / temperature, top_k, top_p), generator)[0]


def new_cache(model: ARGVLT, batch: int, device: torch.device) -> KVCache:
    """The KV cache of `model` (ARGVLT, or any model with the same `new_cache`, e.g. a causal GIVT) in the dtype its attention produces: the autocast dtype under autocast (half the memory
    of float32), else the weights' dtype."""
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    return model.new_cache(batch, device, dtype)


def known_first(masked: torch.Tensor) -> torch.Tensor:
    """(B, N) bool, True = to generate -> (B, N) long: per row, the raster indices of the known tokens in raster
    order, then those of the masked ones in raster order. Image slot j of row b is fed the token of raster position
    result[b, j], with that position's id."""
    return torch.sort(masked.int(), dim=1, stable=True).indices


@torch.no_grad()
def inpaint(model: ARGVLT, image: torch.Tensor, masked: torch.Tensor, text: torch.Tensor, cfg: ARGVLTSampling,
            generator: torch.Generator | None) -> torch.Tensor:
    """Fill the (B, N) codes where `masked` (B, N) bool is True, given the rest and the (B, C) EOS-padded text
    (REFERENCE.md §2: the official `sample_1d_fast_it2i`, 'cm').

    In t2i order [BOT, text, BOI, image slots], each row's image slots are permuted by `known_first`: its known codes
    first, in raster order and with their true position ids, then its masked positions in raster order, each fed
    (once drawn) with its own position id. The permutation gives every row the same sequence length although rows
    mask different counts. The slots known in every row go through the cache with the prefix in one block; from then
    on, one step per slot: a row whose slot is known is fed its known code (the draw is discarded), a row whose slot
    is masked is fed the draw.

    What the model knows when it predicts a masked token: the text, every known code with its position, and the
    masked codes drawn before it with theirs; not the position of the token it predicts (the output at slot j - 1
    predicts slot j's code before slot j's position id is fed, see `ARGVLT.forward`). A model trained in raster order
    must infer that position, e.g. from the last fed one. The entries of `image` at masked positions are ignored.
    """
    model.eval()
    b, n = image.shape
    c = model.cfg.text_tokens
    positions = known_first(masked)  # (B, N): slot j of row b holds raster position positions[b, j]
    slotted = image.gather(1, positions)  # (B, N) codes in slot order; the masked slots are filled below
    known = ~masked.gather(1, positions)  # (B, N): True on each row's first (known) slots
    start = int(known.sum(dim=1).min())  # slots known in every row: fed with the prefix
    if start == n:
        return image.clone()
    cache = new_cache(model, b, image.device)
    prefix = sequence("t2i", slotted, text)[:, :c + 2 + start]  # [BOT, text(C), BOI, the first `start` slots]
    logits = model.step(cache, "t2i", prefix, image_positions=positions)  # (B, image_vocab): slot `start`'s code
    for j in range(start, n):
        drawn = draw(logits, cfg.image_temperature, cfg.image_top_k, cfg.image_top_p, generator)  # (B,)
        slotted[:, j] = torch.where(known[:, j], slotted[:, j], drawn)
        if j + 1 < n:  # the last code predicts nothing
            logits = model.step(cache, "t2i", slotted[:, j:j + 1], image_positions=positions)
    return image.clone().scatter_(1, positions, slotted)


def generate_images(model: ARGVLT, text: torch.Tensor, cfg: ARGVLTSampling,
                    generator: torch.Generator | None) -> torch.Tensor:
    """(B, C) EOS-padded text -> (B, N) codes drawn in raster order: the prefix [BOT, text, BOI] in one block, then
    exactly N steps. This is `inpaint` with every position masked (the permutation is then the identity)."""
    b, n = text.shape[0], model.cfg.image_tokens
    image = text.new_zeros(b, n)
    return inpaint(model, image, torch.ones_like(image, dtype=torch.bool), text, cfg, generator)


@torch.no_grad()
def generate_text(model: ARGVLT, image: torch.Tensor, cfg: ARGVLTSampling, generator: torch.Generator | None, *,
                  eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) codes -> ((B, C) captions as MAGVLT rows: ids, EOS, EOS-padded; (B,) n_txt: tokens up to and including
    the first EOS, C when a row never drew it).

    The prefix [BOI, image, BOT] goes through the cache in one block, then at most C steps (i2t order). A row that
    draws `eos_id` (the tokenizer's) is finished: it leaves the batch and the cache (`KVCache.reorder`), so the
    remaining steps cost only the rows still writing, and decoding stops once every row is finished.
    """
    model.eval()
    b = image.shape[0]
    n, c = model.cfg.image_tokens, model.cfg.text_tokens
    ids = image.new_full((b, c), eos_id)
    lengths = image.new_full((b,), c)
    cache = new_cache(model, b, image.device)
    prefix = sequence("i2t", image, ids)[:, :n + 2]  # (B, N + 2): [BOI, image(N), BOT]
    logits = model.step(cache, "i2t", prefix)  # (B, text_vocab): the first text token
    live = torch.arange(b, device=image.device)  # (b',) the rows still writing, in the cache's row order
    for k in range(c):
        token = draw(logits, cfg.text_temperature, cfg.text_top_k, cfg.text_top_p, generator)  # (b',)
        ids[live, k] = token
        done = token == eos_id
        if done.any():
            lengths[live[done]] = k + 1
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            live, token = live[keep], token[keep]
            cache.reorder(keep)
        if k + 1 < c:  # the last text token predicts nothing
            logits = model.step(cache, "i2t", token.unsqueeze(1))
    return ids, lengths
