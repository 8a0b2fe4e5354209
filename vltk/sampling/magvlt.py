"""MAGVLT's samplers: iterative parallel decoding of images (MaskGIT-style) and text (Mask-Predict-style).

    cfg = MAGVLTSampling()                                             # the paper's defaults (MAGVLT §4.1)
    g = torch.Generator().manual_seed(0)
    codes = generate_images(model, text, text_len, cfg, g)             # T2I: (B, N) codes, no mask left
    codes = generate_images(model, text, text_len, cfg, g, image=codes, masked=center_box(16).expand(B, -1))
    caps = generate_text(model, codes, cfg, g, eos_id=tok.eos_id)      # I2T: caps.ids (B, C), caps.lengths (B,)
    codes = generate_images(model, text, text_len, MAGVLTSampling(guidance=3, guidance_schedule="linear"), g)
    codes, caps = generate_pairs(model, 8, cfg, g, eos_id=tok.eos_id)  # unconditional image + text
    codes, caps = generate_joint(model, codes, region, text, span, cfg, g, eos_id=tok.eos_id)  # inpaint + infill
    pixels = blend(decoded, source, center_box(16).expand(B, -1), grid=16)

Images (magvlt `sample_t2i`, `sample_it2i`; t2i layout): every step samples all still-masked tokens at the annealed
temperature and unmasks the n_t most confident (log of the tempered probability of the sampled token + annealed Gumbel
noise); fixed image tokens are never re-masked and the last step fills everything. n_t follows `unmask_counts`:
r_t = t / T for t = 1..T after the forward pass, ceil in float32, at least one per step, and the last step unmasks all
that is left (the float32 cosine is slightly negative at r = 1).

Text (magvlt `sample_i2t`; image-first layout): a length pass reads N = argmax(length head at BOT) + 1; then each of T
iterations re-masks n_t = max(1, floor(N (T - t) / T)) of the first N positions, chosen from the running per-position
log-probs (already generated text can be re-masked), and re-samples them at temperature tau after top-k / top-p.
Output rows follow the data contract (BPE ids, EOS, EOS padding): positions >= N and everything after the first EOS
become EOS. No EOS is forced: a caption that fills its window keeps all N sampled tokens (the official decoder also
reads up to the first EOS, which is then the padding at N), so `lengths` = first EOS + 1, or C when there is none.

Joint inpainting + infilling (`generate_joint`; IT2IT layout): a region of the image and a span of the caption are
masked at once, and each step's one forward pass updates both, the image by the image rule and the text by infilling's
rule, each on its own schedule over max(image_steps, text_steps) steps.

Classifier-free guidance (Ho & Salimans 2022; for masked token models Muse, Chang et al. 2023): with `guidance` w > 0
every step's logits are c + w (c - u), Muse's (1 + w) c - w u, where c are the conditional logits and u those of the
same rows with the null condition, built by `vltk.models.magvlt.drop_condition` exactly as condition dropout trains
it (T2I and inpainting: the empty caption; I2T and infilling: the null image). Both come from one forward pass of 2B
rows. The scale is constant or, as Muse does, ramped linearly over the steps (`guidance_scales`); temperatures, choice
noise, top-k and re-masking then act on the guided logits as on plain ones. w = 0 runs no 2B pass at all: today's
sampler, bitwise. The I2T length pass reads the conditional length head only (the null image's length is a prior, not
an alternative to push away from), and unconditional pairs have no condition to guide by. Self re-ranking
(`vltk.sampling.rerank`) scores a guided sample with the conditional pass only: log p(caption | image) unguided.

All sampling math runs in float32 (vltk's choice). Randomness comes only from the explicit generator.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F

from vltk.masking import prefix_mask, top_n
from vltk.models.magvlt import MAGVLT, Inputs, drop_condition
from vltk.sampling.common import (
    GuidanceSchedule, check_guidance, filter_logits, guidance_scales, guide, gumbel, sample,
)
from vltk.schedules import SCHEDULES, Schedule, mask_fraction

Unmask = Literal["multinomial-maskgit", "maskgit", "random"]
Remask = Literal["sample", "topk"]
UNMASK_RULES: tuple[str, ...] = ("multinomial-maskgit", "maskgit", "random")
REMASK_RULES: tuple[str, ...] = ("sample", "topk")
_EPS = 1e-20  # floor on a confidence before its log: an underflowed probability must still rank, not be -inf


@dataclasses.dataclass(frozen=True, kw_only=True)
class MAGVLTSampling:
    """The sampler's knobs; defaults are the released sampling configs (magvlt configs/)."""

    image_steps: int = 10
    image_temperature: tuple[float, float] = (1.4, 0.6)  # linear anneal over the steps, first to last
    choice_noise: tuple[float, float] = (2.0, 0.2)  # Gumbel scale on the log-confidence, linear anneal
    image_schedule: Schedule = "cosine"
    unmask: Unmask = "multinomial-maskgit"  # "maskgit": deterministic top-n confidence; "random": uniform order
    text_steps: int = 12
    text_temperature: float = 0.1  # the sampling config; the official eval config uses 0.5
    text_top_k: int | None = 32
    text_top_p: float | None = None
    text_remask: Remask = "sample"  # draw without replacement with prob ∝ 1/p; "topk": the lowest log-probs
    guidance: float = 0.0  # classifier-free guidance w (logits c + w (c - u)); 0: none, and no second pass
    guidance_schedule: GuidanceSchedule = "constant"  # "linear": ramped up to w over the steps (Muse)

    def __post_init__(self) -> None:
        if self.image_steps < 1 or self.text_steps < 1:
            raise ValueError(f"image_steps and text_steps must be >= 1, got {self.image_steps}, {self.text_steps}")
        if len(self.image_temperature) != 2 or min(self.image_temperature) <= 0 or self.text_temperature <= 0:
            raise ValueError(f"temperatures must be > 0 (image: a (first, last) pair), got {self.image_temperature!r}"
                             f" and {self.text_temperature!r}")
        if len(self.choice_noise) != 2 or min(self.choice_noise) < 0:
            raise ValueError(f"choice_noise must be a (first, last) pair >= 0, got {self.choice_noise!r}")
        if self.image_schedule not in SCHEDULES:
            raise ValueError(f"unknown image_schedule {self.image_schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.unmask not in UNMASK_RULES:
            raise ValueError(f"unknown unmask rule {self.unmask!r}; choose from {', '.join(UNMASK_RULES)}")
        if self.text_remask not in REMASK_RULES:
            raise ValueError(f"unknown text_remask rule {self.text_remask!r}; choose from {', '.join(REMASK_RULES)}")
        check_guidance(self.guidance, self.guidance_schedule)
        if self.text_top_k is not None and self.text_top_k < 1:
            raise ValueError(f"text_top_k must be >= 1 or None, got {self.text_top_k!r}")
        if self.text_top_p is not None and not 0 < self.text_top_p <= 1:
            raise ValueError(f"text_top_p must be in (0, 1] or None, got {self.text_top_p!r}")


@dataclasses.dataclass(frozen=True)
class TextResult:
    ids: torch.Tensor  # (B, C) long MAGVLT rows: tokens, EOS, EOS padding
    lengths: torch.Tensor  # (B,) long: first EOS + 1, or C without one (the data contract's n_txt)
    logprob: torch.Tensor  # (B,) float32: sum of the tokens' log-probs (filtered, tempered) over the first `lengths`


# ---- schedules and pure helpers ----

def unmask_table(totals: torch.Tensor, steps: int, schedule: Schedule) -> torch.Tensor:
    """(B, steps) long: tokens newly unmasked per step for rows with `totals` (B,) masked tokens at the start.

    keep_t = clamp(ceil(gamma(t / T) * total), 0, prev) in float32 after the forward pass of step t = 1..T; the step
    unmasks prev - keep_t, at least 1 while any is left, and the last step unmasks all that is left.
    """
    ratios = torch.linspace(0, 1, steps + 1, device=totals.device)[1:]  # (T,) float32, as the official code
    fractions = mask_fraction(ratios, schedule)  # (T,)
    prev, columns = totals.long(), []
    for t in range(steps):
        if t == steps - 1:
            count = prev
        else:
            keep = torch.minimum(torch.ceil(fractions[t] * totals.float()).long().clamp(min=0), prev)
            count = torch.minimum((prev - keep).clamp(min=1), prev)  # >= 1 unless nothing is left
        columns.append(count)
        prev = prev - count
    return torch.stack(columns, dim=1)


def unmask_counts(total: int, steps: int, schedule: Schedule) -> list[int]:
    """Tokens newly unmasked at each of `steps` steps for `total` masked tokens (see `unmask_table`)."""
    return unmask_table(torch.tensor([total]), steps, schedule)[0].tolist()


def infill_span(n_tokens: int) -> tuple[int, int]:
    """(start, count) of the text-infilling span for a caption of n_tokens non-EOS tokens: the central floor(n/2)."""
    count = n_tokens // 2
    return count - count // 2, count


def center_box(grid: int) -> torch.Tensor:
    """(grid * grid,) bool raster mask of the central block of side grid // 2 (rows and cols 4..11 for 16)."""
    side = grid // 2
    start = (grid - side) // 2
    inside = (torch.arange(grid) >= start) & (torch.arange(grid) < start + side)  # (grid,)
    return (inside.unsqueeze(1) & inside.unsqueeze(0)).flatten()


def anneal(ends: tuple[float, float], steps: int) -> list[float]:
    """A linear anneal from ends[0] at the first step to ends[1] at the last (float32 values, as torch.linspace)."""
    return torch.linspace(ends[0], ends[1], steps).tolist()



def window_lengths(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B,) long n_txt of (B, C) rows: first EOS + 1, or C without one (vltk.text.bpe.text_lengths, in torch)."""
    is_eos = ids == eos_id
    return torch.where(is_eos.any(dim=1), is_eos.long().argmax(dim=1) + 1, ids.shape[1])


def _stack(a: Inputs, b: Inputs) -> Inputs:
    """The rows of a then those of b (same layout, no selector): one batch of 2B rows."""
    rows = [torch.cat([getattr(a, f), getattr(b, f)]) for f in ("image", "image_masked", "text", "text_masked",
                                                                  "text_len")]
    return Inputs(a.layout, *rows)


def guided_logits(model: MAGVLT, x: Inputs, query: torch.Tensor, w: float) -> torch.Tensor:
    """(M, V) logits of what x's layout generates (text-first: the image, at the (B, N) bool `query`; image-first: the
    text, at a (B, C) one; M = query.sum()). w = 0: the one pass of B rows, untouched; else c + w (c - u) from one
    pass of 2B rows, x's rows then the same rows with the null condition (the query's row-major order puts all of c
    before all of u)."""
    image = x.layout == "t2i"
    if w != 0:
        null = drop_condition(x, torch.ones_like(x.text_len, dtype=torch.bool), model.cfg.eos_id)
        x, query = _stack(x, null), torch.cat([query, query])
    out = model(x, image_query=query if image else None, text_query=None if image else query)
    logits = out.image_logits if image else out.text_logits
    return logits if w == 0 else guide(*logits.chunk(2), w)


# ---- one step of each modality, shared by the three samplers ----

def _choose_unmask(masked: torch.Tensor, confidence: torch.Tensor, counts: torch.Tensor, noise: float,
                   rule: Unmask, generator: torch.Generator | None) -> torch.Tensor:
    """(B, N) bool: which still-masked positions to unmask; confidence (B, N) float32 (read where masked)."""
    if rule == "random":
        scores = gumbel(masked.shape, generator, masked.device)
    else:
        scores = confidence.clamp(_EPS, 1.0).log()
        if rule == "multinomial-maskgit":
            scores = scores + noise * gumbel(masked.shape, generator, masked.device)
    return top_n(scores, masked, counts)


def _image_step(image: torch.Tensor, masked: torch.Tensor, logits: torch.Tensor, counts: torch.Tensor,
                temperature: float, noise: float, cfg: MAGVLTSampling,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample every masked position from its (M, V) logits (row-major over `masked`), keep counts (B,) of them."""
    ids, probs = sample(logits.float() / temperature, generator)  # (M,), (M,): the tempered probability
    confidence = torch.zeros(masked.shape, device=masked.device).masked_scatter(masked, probs)  # (B, N)
    chosen = _choose_unmask(masked, confidence, counts, noise, cfg.unmask, generator)
    image = torch.where(chosen, image.masked_scatter(masked, ids), image)
    return image, masked & ~chosen


def _remask_text(logprob: torch.Tensor, window: torch.Tensor, counts: torch.Tensor, rule: Remask,
                 generator: torch.Generator | None) -> torch.Tensor:
    """(B, C) bool: counts (B,) positions inside the window to re-mask, from the running log-probs (B, C)."""
    scores = -logprob
    if rule == "sample":
        # Gumbel-top-k: the top n of -log p + Gumbel is a draw without replacement with probability ∝ exp(-log p).
        scores = scores + gumbel(logprob.shape, generator, logprob.device)
    return top_n(scores, window, counts)


def _text_step(text: torch.Tensor, logprob: torch.Tensor, masked: torch.Tensor, logits: torch.Tensor,
               cfg: MAGVLTSampling, generator: torch.Generator | None, banned: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-sample the masked text positions from their (M, V) logits; store log p under the filtered distribution.
    `banned`: an id never drawn (infilling's EOS, see `generate_text`)."""
    logits = logits.float()
    if banned is not None:
        logits = logits.index_fill(1, torch.tensor([banned], device=logits.device), float("-inf"))
    filtered = filter_logits(logits / cfg.text_temperature, cfg.text_top_k, cfg.text_top_p)
    ids, probs = sample(filtered, generator)
    return text.masked_scatter(masked, ids), logprob.masked_scatter(masked, probs.log())


def _text_counts(window: torch.Tensor, t: int, steps: int) -> torch.Tensor:
    """(B,) long: positions masked at iteration t = 0..T-1 for windows of `window` (B,) tokens (linear, >= 1)."""
    return (window * (steps - t) // steps).clamp(min=1)


def _span_remask(logprob: torch.Tensor, window: torch.Tensor, length: torch.Tensor, span: torch.Tensor | None, t: int,
                 steps: int, cfg: MAGVLTSampling, generator: torch.Generator | None) -> torch.Tensor:
    """(B, w) bool: iteration t's re-mask, Mask-Predict's linear count over each (B,) `length` window chosen from the
    running (B, w) log-probs, kept inside the (B, w) bool `span` when there is one (infilling)."""
    remask = _remask_text(logprob, window, _text_counts(length, t, steps), cfg.text_remask, generator)
    return remask if span is None else remask & span


def _close_window(text_w: torch.Tensor, logprob_w: torch.Tensor, ids: torch.Tensor, length: torch.Tensor,
                  eos_id: int) -> TextResult:
    """The text loop's first w columns, (B, w) ids and log-probs, put back before the rest of the (B, C) rows `ids`
    (EOS padding past every window) and finished (`_finish_text`)."""
    w, c = text_w.shape[1], ids.shape[1]
    return _finish_text(torch.cat([text_w, ids[:, w:]], dim=1), F.pad(logprob_w, (0, c - w)), length, eos_id)


def _finish_text(text: torch.Tensor, logprob: torch.Tensor, window: torch.Tensor, eos_id: int) -> TextResult:
    """Rows cut to the window and to the first EOS, EOS-padded; the log-prob summed over the kept tokens."""
    positions = torch.arange(text.shape[1], device=text.device).unsqueeze(0)  # (1, C)
    ids = torch.where(positions < window.unsqueeze(1), text, eos_id)
    lengths = window_lengths(ids, eos_id)
    kept = positions < lengths.unsqueeze(1)  # (B, C)
    return TextResult(ids=torch.where(kept, ids, eos_id), lengths=lengths,
                      logprob=(logprob * kept).sum(dim=1))


def _length(model: MAGVLT, x: Inputs) -> torch.Tensor:
    """(B,) long N = argmax(length head at BOT) + 1 for image-first inputs x."""
    return model(x, length=True).length_logits.argmax(dim=-1) + 1


# ---- the samplers ----

@torch.no_grad()
def generate_images(model: MAGVLT, text: torch.Tensor, text_len: torch.Tensor, cfg: MAGVLTSampling,
                    generator: torch.Generator | None, *, image: torch.Tensor | None = None,
                    masked: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) codes for captions text (B, C) / text_len (B,): T2I, or inpainting of the (B, N) bool `masked` region of
    (B, N) `image` codes (the schedule counts each row's masked tokens; the other tokens are returned unchanged)."""
    model.eval()
    b, n = text.shape[0], model.cfg.image_tokens
    if (image is None) != (masked is None):
        raise ValueError("inpainting needs both `image` and `masked`; T2I needs neither")
    if image is None:
        image = torch.zeros(b, n, dtype=torch.long, device=text.device)  # placeholders: masked ids are not read
        masked = torch.ones(b, n, dtype=torch.bool, device=text.device)
    steps = cfg.image_steps
    table = unmask_table(masked.sum(dim=1), steps, cfg.image_schedule)  # (B, T)
    temperatures, noises = anneal(cfg.image_temperature, steps), anneal(cfg.choice_noise, steps)
    scales = guidance_scales(cfg.guidance, steps, cfg.guidance_schedule)
    no_text_mask = torch.zeros_like(text, dtype=torch.bool)
    for t in range(steps):
        if not masked.any():
            break
        logits = guided_logits(model, Inputs("t2i", image, masked, text, no_text_mask, text_len), masked, scales[t])
        image, masked = _image_step(image, masked, logits, table[:, t], temperatures[t], noises[t], cfg, generator)
    return image


@torch.no_grad()
def generate_text(model: MAGVLT, image: torch.Tensor, cfg: MAGVLTSampling, generator: torch.Generator | None, *,
                  eos_id: int, length: torch.Tensor | None = None, text: torch.Tensor | None = None,
                  masked: torch.Tensor | None = None) -> TextResult:
    """Captions for (B, N) codes (I2T), or infilling of the (B, C) bool `masked` span of (B, C) `text` rows.

    length (B,) long sets N (EOS included) instead of the length head; infilling defaults it to the true length of
    `text` (vltk's choice: the official code keeps the length head's N), every iteration's re-mask is intersected
    with the span, and the span never draws EOS: the window's EOS is given, and one drawn inside the span would end
    the caption there and drop the given words after it (`_finish_text` cuts at the first EOS).
    """
    model.eval()
    b, c = image.shape[0], model.cfg.text_tokens
    if (text is None) != (masked is None):
        raise ValueError("infilling needs both `text` and `masked`; I2T needs neither")
    no_image_mask = torch.zeros_like(image, dtype=torch.bool)
    ids = text.clone() if text is not None else torch.full((b, c), eos_id, dtype=torch.long, device=image.device)
    if length is None and text is not None:
        length = window_lengths(text, eos_id)
    if length is None:  # the length pass sees the image and an all-masked text over the whole context
        everything = torch.ones(b, c, dtype=torch.bool, device=image.device)
        context = torch.full((b,), c, dtype=torch.long, device=image.device)
        length = _length(model, Inputs("i2t", image, no_image_mask, ids, everything, context))
    # The loop runs on the first w = max(N) columns: the rest lie past every window, where no query reads and no key
    # may be seen (MAGVLT.forward gives the same outputs), so they stay as they are (EOS padding).
    w = int(length.max())
    text_w, logprob_w = ids[:, :w], torch.zeros(b, w, device=image.device)  # (B, w)
    window = prefix_mask(length, w)  # (B, w)
    span = masked[:, :w] if masked is not None else None
    scales = guidance_scales(cfg.guidance, cfg.text_steps, cfg.guidance_schedule)
    for t in range(cfg.text_steps):
        remask = _span_remask(logprob_w, window, length, span, t, cfg.text_steps, cfg, generator)
        if not remask.any():
            continue
        logits = guided_logits(model, Inputs("i2t", image, no_image_mask, text_w, remask, length), remask, scales[t])
        text_w, logprob_w = _text_step(text_w, logprob_w, remask, logits, cfg, generator,
                                       banned=eos_id if span is not None else None)
    return _close_window(text_w, logprob_w, ids, length, eos_id)


@torch.no_grad()
def generate_joint(model: MAGVLT, image: torch.Tensor, image_masked: torch.Tensor, text: torch.Tensor,
                   text_masked: torch.Tensor, cfg: MAGVLTSampling, generator: torch.Generator | None, *,
                   eos_id: int) -> tuple[torch.Tensor, TextResult]:
    """Joint inpainting and infilling: the (B, N) bool `image_masked` region of (B, N) codes and the (B, C) bool
    `text_masked` span of (B, C) caption rows, decoded together in one IT2IT sequence (the `i2t` layout, both
    modalities masked, as MAGVLT's IT2IT task trains, §3.1); every other token is returned unchanged. (B, N) codes and
    the completed captions (vltk's form: the paper and the official code do not include this task).

    Interleaved, not alternating: each of T = max(image_steps, text_steps) steps is one forward pass that queries both
    modalities' masked positions, and each modality takes its own rule on its own schedule from that pass: the image
    unmasks its count of the region (`unmask_table` over the region, temperature and choice-noise anneals stretched
    over T, as `generate_pairs`), never re-masking; the text re-masks and re-samples inside the span (infilling's rule:
    the window at the true length, so the span keeps its token count, Mask-Predict's linear count over T, no EOS).
    Why: at every step each modality reads the other's partial fill (the region's tokens unmasked so far, the span's
    current words), the cross-modal context that two separate passes lack (inpainting reads the span as MASK,
    infilling the region as MASK or as a finished guess it cannot revise). Alternating (all image steps, then all text
    steps) is those two passes in sequence; round-robin gives each modality the other's fill one pass late and costs
    image_steps + text_steps passes, 22 at the defaults, where interleaving gives each modality at least its own
    default step count (§4.1: 10 for images, 12 for text) in max(10, 12) = 12 passes.

    Equivalences (tests/unit/test_sampling_magvlt.py): with an empty region and image_steps <= text_steps this is
    infilling (`generate_text` with `text`, `masked`) bit for bit; with an empty span the region is unmasked at
    inpainting's counts with image_steps = T (the same positions under the deterministic "maskgit" rule). Unguided:
    both modalities are generated, so there is no one condition to drop.
    """
    model.eval()
    length = window_lengths(text, eos_id)  # (B,) the true n_txt, EOS included
    w = int(length.max())  # the text loop's columns, as generate_text's
    text_w, logprob_w = text[:, :w], torch.zeros(text.shape[0], w, device=text.device)  # (B, w)
    window, span = prefix_mask(length, w), text_masked[:, :w]  # (B, w) each
    steps = max(cfg.image_steps, cfg.text_steps)
    table = unmask_table(image_masked.sum(dim=1), steps, cfg.image_schedule)  # (B, T)
    temperatures, noises = anneal(cfg.image_temperature, steps), anneal(cfg.choice_noise, steps)
    for t in range(steps):
        remask = _span_remask(logprob_w, window, length, span, t, steps, cfg, generator)  # (B, w)
        if not (remask.any() or image_masked.any()):
            continue
        out = model(Inputs("i2t", image, image_masked, text_w, remask, length), image_query=image_masked,
                    text_query=remask)
        if image_masked.any():
            image, image_masked = _image_step(image, image_masked, out.image_logits, table[:, t], temperatures[t],
                                              noises[t], cfg, generator)
        text_w, logprob_w = _text_step(text_w, logprob_w, remask, out.text_logits, cfg, generator, banned=eos_id)
    return image, _close_window(text_w, logprob_w, text, length, eos_id)


@torch.no_grad()
def generate_pairs(model: MAGVLT, batch: int, cfg: MAGVLTSampling, generator: torch.Generator | None, *,
                   eos_id: int, length_range: tuple[int, int] = (8, 16)) -> tuple[torch.Tensor, TextResult]:
    """Unconditional image + text pairs: (B, N) codes and their captions (MAGVLT App. D; vltk's form: no official code).

    Both modalities start masked in the image-first layout and run T = max(image_steps, text_steps) joint steps: the
    image rule with its schedule and anneals stretched over T, the text rule inside the current window N. N starts
    uniform in length_range (inclusive, clamped to [1, C]) and is re-read from the length head after every step but
    the last, from the current state (partial image, visible text of the window, text_len = N, as IT2IT training
    sees it). Positions a grown window exposes start masked; positions a shrunk window drops become EOS again.
    """
    model.eval()
    n, c = model.cfg.image_tokens, model.cfg.text_tokens
    device = next(model.parameters()).device
    low = min(max(length_range[0], 1), c)
    high = min(max(length_range[1], low), c)
    length = torch.randint(low, high + 1, (batch,), generator=generator, device=device)  # (B,)
    image = torch.zeros(batch, n, dtype=torch.long, device=device)
    image_masked = torch.ones(batch, n, dtype=torch.bool, device=device)
    ids = torch.full((batch, c), eos_id, dtype=torch.long, device=device)
    logprob = torch.zeros(batch, c, device=device)
    known = torch.zeros(batch, c, dtype=torch.bool, device=device)  # text positions holding a sampled token
    steps = max(cfg.image_steps, cfg.text_steps)
    table = unmask_table(torch.full((batch,), n, device=device), steps, cfg.image_schedule)  # (B, T)
    temperatures, noises = anneal(cfg.image_temperature, steps), anneal(cfg.choice_noise, steps)
    for t in range(steps):
        window = prefix_mask(length, c)  # (B, C)
        remask = _remask_text(logprob, window, _text_counts(length, t, steps), cfg.text_remask, generator)
        remask = remask | (window & ~known)
        out = model(Inputs("i2t", image, image_masked, ids, remask, length), image_query=image_masked,
                    text_query=remask)
        if image_masked.any():
            image, image_masked = _image_step(image, image_masked, out.image_logits, table[:, t], temperatures[t],
                                              noises[t], cfg, generator)
        ids, logprob = _text_step(ids, logprob, remask, out.text_logits, cfg, generator)
        known = known | remask
        if t < steps - 1:
            length = _length(model, Inputs("i2t", image, image_masked, ids, ~known, length))
            window = prefix_mask(length, c)
            ids, logprob, known = torch.where(window, ids, eos_id), logprob * window, known & window
    return image, _finish_text(ids, logprob, length, eos_id)


def blend(generated: torch.Tensor, source: torch.Tensor, edited: torch.Tensor, grid: int,
          radius: float | None = None) -> torch.Tensor:
    """MaskGIT's composite of (B, 3, H, W) images: generated inside the (B, grid * grid) bool edit mask, source outside,
    through the edit mask upsampled to pixels and Gaussian-blurred.

    radius defaults to H / 16 - 1 (MaskGIT's image_size / 16 - 1 = 15 at 256 px) and is used as the Gaussian's
    standard deviation, as PIL's GaussianBlur(radius) that MaskGIT calls defines it; the kernel spans +-3 sigma
    (capped where reflection padding needs it). A radius <= 0 gives the hard (unblurred) composite.
    """
    b, _, h, w = generated.shape
    m = F.interpolate(edited.reshape(b, 1, grid, grid).float(), size=(h, w), mode="nearest")  # (B, 1, H, W)
    sigma = h / 16 - 1 if radius is None else radius
    if sigma > 0:
        from torchvision.transforms.functional import gaussian_blur  # torchvision takes ~1.5 s to import: only here

        size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(h, w) - 1)
        m = gaussian_blur(m, [size, size], [sigma, sigma])
    m = m.to(generated.dtype)
    return generated * m + source * (1 - m)
