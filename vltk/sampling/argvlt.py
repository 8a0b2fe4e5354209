"""ARGVLT's samplers: token-by-token decoding through the KV cache (kakaobrain/magvlt feat/eval utils/sampling.py).

    cfg = ARGVLTSampling()                                            # image tau 1 / top-k 256, text tau 0.5 / top-k 32
    g = torch.Generator().manual_seed(0)
    codes = generate_images(model, text, cfg, g)                      # (B, N) VQ codes, N model steps
    ids, lengths = generate_text(model, codes, cfg, g, eos_id=tokenizer.eos_id)   # (B, C) EOS-padded, (B,) n_txt
    filled = inpaint(model, codes, masked, text, cfg, g)              # (B, N); codes where ~masked come back unchanged
    codes = generate_images(model, text, ARGVLTSampling(guidance=3), g)   # classifier-free guided, w = 3

Every step divides the logits by the temperature, keeps the top-k, then the top-p nucleus, and draws from the
softmax, all in float32 (`vltk.sampling.common`), whatever precision the model ran in. The samplers put the model in
eval mode (as MAGVLT's do); on a GPU the caller may wrap them in autocast, and the cache then stores keys and values in
the autocast dtype.

Classifier-free guidance (Ho & Salimans 2022): with `guidance` w > 0 every step draws from the logits c + w (c - u),
where c are the conditional logits and u those of the same rows with the null condition, built by
`vltk.models.argvlt.drop_condition` as condition dropout trains it (t2i and inpainting: the empty caption; i2t: the
null image). As LlamaGen (Sun et al. 2024, autoregressive image generation) does, both come from one KV cache of 2B
rows: the B conditional rows, then their B null rows; each step's one drawn token per sample is fed to both of its
rows, so that the null rows continue the same sample. The scale is constant or ramped over the steps
(`vltk.sampling.common.guidance_scales`, as MAGVLT's), and the temperature and the filters then act on the guided
logits. w = 0 builds no 2B rows at all: today's sampler, bitwise. Self re-ranking (`vltk.sampling.rerank`) scores a
guided sample with the conditional model only.
"""

from __future__ import annotations

import dataclasses

import torch

from vltk.models.argvlt import ARGVLT, Order, drop_condition, sequence
from vltk.models.layers import KVCache
from vltk.sampling.common import GuidanceSchedule, check_guidance, filter_logits, guidance_scales, guide, sample


@dataclasses.dataclass(frozen=True, kw_only=True)
class ARGVLTSampling:
    """Per-modality filters. Image: tau 1.0 and top-k 256, the minDALL-E defaults the official AR sampler helper
    uses; text: the eval config's tau 0.5 and top-k 32 (kakaobrain/magvlt feat/eval). None turns a filter off."""

    image_temperature: float = 1.0
    image_top_k: int | None = 256
    image_top_p: float | None = None
    text_temperature: float = 0.5
    text_top_k: int | None = 32
    text_top_p: float | None = None
    guidance: float = 0.0  # classifier-free guidance w (logits c + w (c - u)); 0: none, and no 2B rows
    guidance_schedule: GuidanceSchedule = "constant"  # "linear": ramped up to w over the steps, as MAGVLT's

    def __post_init__(self) -> None:
        if min(self.image_temperature, self.text_temperature) <= 0:
            raise ValueError("temperatures must be > 0 (use top_k=1 for greedy decoding)")
        check_guidance(self.guidance, self.guidance_schedule)


def draw(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
         generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) ids drawn from softmax(filter(logits / temperature)), in float32."""
    return sample(filter_logits(logits.float() / temperature, top_k, top_p), generator)[0]


def new_cache(model: ARGVLT, batch: int, device: torch.device) -> KVCache:
    """The KV cache of `model` (ARGVLT, or any model with the same `new_cache`, e.g. a causal GIVT) in the dtype its attention produces: the autocast dtype under autocast (half the memory
    of float32), else the weights' dtype."""
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    return model.new_cache(batch, device, dtype)


def cache_rows(model: ARGVLT, order: Order, image: torch.Tensor, text: torch.Tensor,
               guided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The (R, N) codes and (R, C) text of the cache's rows from the B given ones: unguided R = B, the rows as they
    are; guided R = 2B, the rows then the same rows with the null condition (`drop_condition`, as training drops it)."""
    if not guided:
        return image, text
    null_image, null_text = drop_condition(order, image, text, torch.ones_like(image[:, 0], dtype=torch.bool),
                                           model.cfg)
    return torch.cat([image, null_image]), torch.cat([text, null_text])


def twice(rows: torch.Tensor, guided: bool) -> torch.Tensor:
    """What each sample feeds its cache rows: (B, ...) once unguided, (2B, ...) to the conditional and null rows."""
    return torch.cat([rows, rows]) if guided else rows


def kept_rows(keep: torch.Tensor, samples: int, guided: bool) -> torch.Tensor:
    """The cache rows of the samples `keep` (b'',) among `samples` live ones: their rows, and guided also their null
    rows, which sit `samples` rows further down."""
    return torch.cat([keep, keep + samples]) if guided else keep


def guide_rows(logits: torch.Tensor, w: float, guided: bool) -> torch.Tensor:
    """(B, V) logits to draw from: unguided, the (B, V) step logits untouched; guided, the float32 c + w (c - u) of
    the (2B, V) logits of the conditional rows, then the null ones."""
    return guide(*logits.chunk(2), w) if guided else logits


def known_first(masked: torch.Tensor) -> torch.Tensor:
    """(B, N) bool, True = to generate -> (B, N) long: per row, the raster indices of the known tokens in raster
    order, then those of the masked ones in raster order. Image slot j of row b is fed the token of raster position
    result[b, j], with that position's id."""
    return torch.sort(masked.int(), dim=1, stable=True).indices


@torch.no_grad()
def inpaint(model: ARGVLT, image: torch.Tensor, masked: torch.Tensor, text: torch.Tensor, cfg: ARGVLTSampling,
            generator: torch.Generator | None) -> torch.Tensor:
    """Fill the (B, N) codes where `masked` (B, N) bool is True, given the rest and the (B, C) EOS-padded text
    (kakaobrain/magvlt feat/eval magvlt/utils/sampling.py: `sample_1d_fast_it2i`, 'cm').

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

    Guided (cfg.guidance > 0), the null rows read the empty caption and the same known codes: unconditional
    inpainting, the contrast that leaves the caption's effect.
    """
    model.eval()
    b, n = image.shape
    c, is_guided = model.cfg.text_tokens, cfg.guidance > 0
    positions = known_first(masked)  # (B, N): slot j of row b holds raster position positions[b, j]
    slotted = image.gather(1, positions)  # (B, N) codes in slot order; the masked slots are filled below
    known = ~masked.gather(1, positions)  # (B, N): True on each row's first (known) slots
    start = int(known.sum(dim=1).min())  # slots known in every row: fed with the prefix
    if start == n:
        return image.clone()
    scales = guidance_scales(cfg.guidance, n - start, cfg.guidance_schedule)  # one per drawn slot
    rows_image, rows_text = cache_rows(model, "t2i", slotted, text, is_guided)  # (R, N), (R, C)
    rows_positions = twice(positions, is_guided)  # (R, N)
    cache = new_cache(model, len(rows_text), image.device)
    prefix = sequence("t2i", rows_image, rows_text)[:, :c + 2 + start]  # [BOT, text(C), BOI, the first `start` slots]
    logits = model.step(cache, "t2i", prefix, image_positions=rows_positions)  # (R, image_vocab): slot `start`'s code
    for j in range(start, n):
        drawn = draw(guide_rows(logits, scales[j - start], is_guided), cfg.image_temperature, cfg.image_top_k,
                     cfg.image_top_p, generator)  # (B,)
        slotted[:, j] = torch.where(known[:, j], slotted[:, j], drawn)
        if j + 1 < n:  # the last code predicts nothing
            logits = model.step(cache, "t2i", twice(slotted[:, j:j + 1], is_guided), image_positions=rows_positions)
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
    remaining steps cost only the rows still writing, and decoding stops once every row is finished. Guided
    (cfg.guidance > 0), the null rows read the null image, and a finished sample's null row leaves with it; the
    guidance scale of step k is that of step k of C (the longest caption), whichever rows are still writing.
    """
    model.eval()
    b = image.shape[0]
    n, c, is_guided = model.cfg.image_tokens, model.cfg.text_tokens, cfg.guidance > 0
    ids = image.new_full((b, c), eos_id)
    lengths = image.new_full((b,), c)
    scales = guidance_scales(cfg.guidance, c, cfg.guidance_schedule)
    rows_image, rows_ids = cache_rows(model, "i2t", image, ids, is_guided)  # (R, N), (R, C)
    cache = new_cache(model, len(rows_image), image.device)
    prefix = sequence("i2t", rows_image, rows_ids)[:, :n + 2]  # (R, N + 2): [BOI, image(N), BOT]
    logits = model.step(cache, "i2t", prefix)  # (R, text_vocab): the first text token
    live = torch.arange(b, device=image.device)  # (b',) the rows still writing, in the cache's row order
    for k in range(c):
        token = draw(guide_rows(logits, scales[k], is_guided), cfg.text_temperature, cfg.text_top_k,
                     cfg.text_top_p, generator)  # (b',)
        ids[live, k] = token
        done = token == eos_id
        if done.any():
            lengths[live[done]] = k + 1
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            live, token = live[keep], token[keep]
            cache.reorder(kept_rows(keep, len(done), is_guided))
        if k + 1 < c:  # the last text token predicts nothing
            logits = model.step(cache, "i2t", twice(token.unsqueeze(1), is_guided))
    return ids, lengths
