"""MAGVLT's training objective (MAGVLT §3.1-3.5): three masked tasks, the length loss, UnrollMask and MixSel.

    task = MAGVLTTask(parts, MAGVLTObjective(), accelerator, global_batch=256, seed=0)
    metrics = task.train_step(batch, step)      # batch: the dict of vltk.data.token_batches, one micro-batch

Per optimiser step one task is drawn from T2I : I2T : IT2IT = 8 : 1 : 1 (for the whole global batch by default, so the
run does not depend on the number of processes). Each sample draws its own ratio r ~ U(0, 1):
- image: clamp(ceil(cos(pi r / 2) * N), 1, N) uniformly chosen tokens are masked;
- text: clamp(ceil(r * n_txt), 1, n_txt) of the caption's first n_txt positions (EOS included, pads never);
- IT2IT uses the same r for both, so the two ratios are anti-correlated, as in the official code.
The loss is the label-smoothed CE on the masked tokens only, over the modality's own vocabulary, as a mean over all
masked tokens of that modality in the global batch; IT2IT adds its image and text means. Tasks whose layout has BOT
(I2T, IT2IT) add 0.01 x the length CE (target n_txt - 1).

UnrollMask (T2I and I2T): the main pass's predictions at the masked positions M (detached, sampled at temperature 1)
replace the masks; r' ~ U(0, 1) picks M' in M with |M'| = clamp(floor(gamma(r') |M|), 1, |M|); a second pass predicts
the ground truth at M' with the model's own guesses as context at M \\ M'.

MixSel (every step, for the drawn task, weight 0.5) uses the pixel-space mixed pairs `vltk encode` made: T2I reads both
captions joined by SEP and predicts the selected one's (unmixed) image; I2T reads the mixed image and predicts the
selected caption (plus its length); IT2IT reads both mixed and masks only the selected half and the selected caption.
The selection token (LEFT / RIGHT / TOP / BOTTOM) replaces BOG; `mixsel_select = false` is MixRandom (random target,
plain BOG).

Condition dropout (`cond_dropout` p, off in the paper; Muse, Chang et al. 2023, drops the text with p = 0.1) trains
the null condition that classifier-free guidance (Ho & Salimans 2022) contrasts with at sampling time: each T2I sample
reads the empty caption and each I2T sample the null image (every image token masked) with probability p, one keyed
draw per sample (`vltk.models.magvlt.drop_condition`). The UnrollMask pass inherits its main pass's inputs, so a
dropped sample stays dropped there. IT2IT has no condition; MixSel keeps its condition, since its selection token
points into the caption or the image that dropout would remove.

Each pass is back-propagated on its own (the next pass's input depends on the previous one's output); under DDP only
the last pass of a micro-batch all-reduces. Every random draw is keyed by the sample's place in the global batch
(`vltk.objectives.common.Draws`) and every count a mean divides by is summed over all processes in one all-reduce per
micro-batch, so one process and several take the same steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from vltk.config import require_range
from vltk.masking import prefix_mask, random_subset, span_mask
from vltk.models.magvlt import BOG, BOTTOM, LEFT, RIGHT, TOP, Inputs, Outputs, drop_condition
from vltk.objectives.common import Draws, batch_offsets, token_ce
from vltk.sampling.common import inverse_cdf
from vltk.schedules import Schedule, mask_count, mask_fraction
from vltk.train.loop import Part, unwrap

TASKS = ("t2i", "i2t", "it2it")
TERMS = ("image", "text", "length")  # the per-pass loss terms whose counts are all-reduced


@dataclasses.dataclass(frozen=True, kw_only=True)
class MAGVLTObjective:
    task_weights: tuple[float, float, float] = (8.0, 1.0, 1.0)  # T2I : I2T : IT2IT (paper Tab. 6)
    task_draw: Literal["global", "rank"] = "global"  # one task per step for all processes, or one per process
    image_schedule: Schedule = "cosine"
    text_schedule: Schedule = "linear"
    shared_ratio: bool = True  # IT2IT: one r for both modalities (official); false draws a second r for the text
    label_smoothing: float = 0.1
    length_weight: float = 0.01
    unroll: bool = True
    unroll_weight: float = 1.0  # neither the paper nor its code gives it: vltk uses 1.0
    unroll_prediction: Literal["sample", "argmax"] = "sample"
    unroll_temperature: float = 1.0
    mixsel: bool = True
    mixsel_weight: float = 0.5
    mixsel_select: bool = True  # false: MixRandom (random target, no selection token)
    cond_dropout: float = 0.0  # P(T2I caption -> empty caption, I2T image -> null image); the paper: 0, Muse: 0.1

    def __post_init__(self) -> None:
        if len(self.task_weights) != 3 or min(self.task_weights) < 0 or sum(self.task_weights) <= 0:
            raise ValueError(f"task_weights must be three non-negative numbers (t2i, i2t, it2it), "
                             f"got {self.task_weights!r}")
        require_range(self, "length_weight", "unroll_weight", "mixsel_weight", low=0)
        if not 0 <= self.cond_dropout <= 1:
            raise ValueError(f"cond_dropout must be in [0, 1], got {self.cond_dropout!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        require_range(self, "unroll_temperature", low=0, strict=True)


@dataclasses.dataclass
class Pass:
    """One forward pass: its inputs, where the loss is taken (masks) and against what (targets)."""

    name: str  # metric prefix, e.g. "t2i", "unroll/i2t", "mixsel/t2i"
    inputs: Inputs
    image_target: torch.Tensor  # (B, N) long
    image_loss: torch.Tensor | None  # (B, N) bool, or None when the pass predicts no image tokens
    text_target: torch.Tensor  # (B, C) long
    text_loss: torch.Tensor | None  # (B, C) bool
    length_target: torch.Tensor | None  # (B,) long class = n_txt - 1, or None
    weight: float = 1.0

    def counts(self) -> list[torch.Tensor]:
        """Items each loss term averages over on this process, in TERMS order (0 for absent terms)."""
        image = self.image_loss.sum() if self.image_loss is not None else torch.tensor(0)
        text = self.text_loss.sum() if self.text_loss is not None else torch.tensor(0)
        length = torch.tensor(len(self.length_target)) if self.length_target is not None else torch.tensor(0)
        return [image, text, length]


def length_classes(text_len: torch.Tensor, context: int) -> torch.Tensor:
    """Length-head targets: class c means c + 1 tokens (EOS included); a caption cut without EOS is the last class."""
    return (text_len - 1).clamp(0, context - 1)


def image_half(vertical: torch.Tensor, first: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, grid * grid) bool: the tokens of the mixed image's half that holds A (first) or B, in raster order.

    A takes the left (top) floor(grid / 2) columns (rows) of a horizontal (vertical) mix, as `vltk.data.mixsel.mix`
    gives A the first floor(side / 2) pixels.
    """
    index = torch.arange(grid, device=vertical.device)
    rows, cols = index.view(1, grid, 1), index.view(1, 1, grid)
    along = torch.where(vertical.view(-1, 1, 1), rows, cols)  # (B, grid, grid): the coordinate the mix splits
    in_first = along < grid // 2
    return torch.where(first.view(-1, 1, 1), in_first, ~in_first).flatten(1)


def selector_tokens(vertical: torch.Tensor, first: torch.Tensor, by_image: bool) -> torch.Tensor:
    """(B,) selection token ids: LEFT/RIGHT for text mixes or horizontal image mixes, TOP/BOTTOM for vertical ones."""
    horizontal = torch.where(first, LEFT, RIGHT)
    if not by_image:
        return horizontal
    return torch.where(vertical, torch.where(first, TOP, BOTTOM), horizontal)


def fill_predictions(logits: torch.Tensor, temperature: float, uniform: torch.Tensor | None) -> torch.Tensor:
    """(M,) token ids from (M, V) logits: argmax when `uniform` is None, else a draw at `temperature` by inverting the
    CDF with one uniform number per row (M,) — keyed draws, unlike torch.multinomial's generator stream."""
    if uniform is None:
        return logits.argmax(dim=-1)
    return inverse_cdf(torch.softmax(logits.float() / temperature, dim=-1), uniform)


class MAGVLTTask:
    """The Task (vltk.train.loop) of MAGVLT training: a micro-batch in, losses back-propagated, metrics out."""

    def __init__(self, parts: dict[str, Part], cfg: MAGVLTObjective, accelerator: Accelerator, *, global_batch: int,
                 seed: int, grid_size: int):
        self.parts, self.cfg, self.accelerator = parts, cfg, accelerator
        self.global_batch, self.seed, self.grid = global_batch, seed, grid_size
        self.eos_id = unwrap(accelerator, parts["model"].module).cfg.eos_id  # the empty caption's token

    # ---- planning: masks and targets of every pass, before any forward ----

    def draw_task(self, draws: Draws) -> str:
        salt = self.accelerator.process_index if self.cfg.task_draw == "rank" else 0
        return TASKS[draws.choice("task", self.cfg.task_weights, salt=salt)]

    def _fractions(self, r: torch.Tensor, r_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and text mask fractions. The official text schedule is gamma_T(r) = r, i.e. linear(1 - r)."""
        return mask_fraction(r, self.cfg.image_schedule), mask_fraction(1.0 - r_text, self.cfg.text_schedule)

    def _masks(self, draws: Draws, prefix: str, image_candidates: torch.Tensor, text_candidates: torch.Tensor,
               image_rounding: str = "ceil") -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) and (B, C) bool masks: uniform subsets of the candidates, counts from one r per sample."""
        r = draws.uniform(f"{prefix}ratio")
        r_text = r if self.cfg.shared_ratio else draws.uniform(f"{prefix}ratio_text")
        image_fraction, text_fraction = self._fractions(r, r_text)
        image_count = mask_count(image_fraction, image_candidates.sum(1), image_rounding)  # type: ignore[arg-type]
        text_count = mask_count(text_fraction, text_candidates.sum(1), "ceil")
        image = random_subset(image_candidates, image_count, draws.uniform(f"{prefix}image_noise",
                                                                           image_candidates.shape[1]))
        text = random_subset(text_candidates, text_count, draws.uniform(f"{prefix}text_noise", text_candidates.shape[1]))
        return image, text

    def plain_pass(self, batch: dict[str, torch.Tensor], task: str, draws: Draws) -> Pass:
        image, text, text_len = batch["image"], batch["text"], batch["text_len"]
        everything = torch.ones_like(image, dtype=torch.bool)
        image_mask, text_mask = self._masks(draws, "", everything, prefix_mask(text_len, text.shape[1]))
        none_image, none_text = torch.zeros_like(image_mask), torch.zeros_like(text_mask)
        if task == "t2i":
            inputs = self.drop_condition(Inputs("t2i", image, image_mask, text, none_text, text_len), draws)
            return Pass(task, inputs, image, image_mask, text, None, None)
        length = length_classes(text_len, text.shape[1])
        if task == "i2t":
            inputs = self.drop_condition(Inputs("i2t", image, none_image, text, text_mask, text_len), draws)
            return Pass(task, inputs, image, None, text, text_mask, length)
        inputs = Inputs("i2t", image, image_mask, text, text_mask, text_len)
        return Pass(task, inputs, image, image_mask, text, text_mask, length)

    def drop_condition(self, x: Inputs, draws: Draws) -> Inputs:
        """x with each sample's condition dropped with probability cond_dropout: one keyed uniform per sample (b,),
        so the dropped samples do not depend on the process split. The targets stay the true ones."""
        return drop_condition(x, draws.uniform("cond_drop") < self.cfg.cond_dropout, self.eos_id)

    def unroll_mask(self, main: Pass, draws: Draws) -> torch.Tensor:
        """M' in M for the generated modality: clamp(floor(gamma(r') |M|), 1, |M|) positions of M, uniformly."""
        image = main.name == "t2i"
        previous = main.image_loss if image else main.text_loss
        r = draws.uniform("unroll/ratio")
        fraction = self._fractions(r, r)[0 if image else 1]
        count = mask_count(fraction, previous.sum(1), "floor")
        return random_subset(previous, count, draws.uniform("unroll/noise", previous.shape[1]))

    def unroll_pass(self, main: Pass, remask: torch.Tensor) -> Pass:
        """The second pass's masks and targets (its inputs get the main pass's predictions later, `fill_unroll`)."""
        x = main.inputs
        if main.name == "t2i":
            inputs = dataclasses.replace(x, image_masked=remask)
            return Pass("unroll/t2i", inputs, main.image_target, remask, main.text_target, None, None,
                        self.cfg.unroll_weight)
        inputs = dataclasses.replace(x, text_masked=remask)
        return Pass("unroll/i2t", inputs, main.image_target, None, main.text_target, remask, None,
                    self.cfg.unroll_weight)

    def fill_unroll(self, unroll: Pass, main: Pass, out: Outputs, draws: Draws) -> None:
        """Put the main pass's own (detached) predictions at M \\ M' of the unroll pass's input."""
        image = main.name == "t2i"
        previous = main.image_loss if image else main.text_loss
        logits = (out.image_logits if image else out.text_logits).detach()
        uniform = None
        if self.cfg.unroll_prediction == "sample":
            uniform = draws.uniform("unroll/sample", previous.shape[1])[previous]
        guesses = (main.image_target if image else main.text_target).clone()
        guesses[previous] = fill_predictions(logits, self.cfg.unroll_temperature, uniform)
        if image:
            unroll.inputs.image = guesses
        else:
            unroll.inputs.text = guesses

    def mixsel_pass(self, batch: dict[str, torch.Tensor], task: str, draws: Draws) -> Pass:
        cfg = self.cfg
        first = draws.uniform("mixsel/target") < 0.5  # (B,) the target is A (the left / top / first caption)
        vertical = batch["mix_vertical"]
        select = cfg.mixsel_select
        n_text = batch["joined_text"].shape[1]
        target_image = torch.where(first.unsqueeze(1), batch["a_image"], batch["b_image"])
        target_text = torch.where(first.unsqueeze(1), batch["a_text"], batch["b_text"])
        target_len = torch.where(first, batch["a_len"], batch["b_len"])
        joined, joined_len = batch["joined_text"], batch["joined_len"]
        span = torch.where(first.unsqueeze(1), batch["a_span"], batch["b_span"])  # (B, 2)
        plain_selector = torch.full_like(target_len, BOG)
        everything = torch.ones_like(target_image, dtype=torch.bool)
        name = f"mixsel/{task}"
        if task == "t2i":
            image_mask, _ = self._masks(draws, "mixsel/", everything, prefix_mask(joined_len, n_text))
            selector = selector_tokens(vertical, first, by_image=False) if select else plain_selector
            inputs = Inputs("t2i", target_image, image_mask, joined, torch.zeros_like(joined, dtype=torch.bool),
                            joined_len, selector)
            return Pass(name, inputs, target_image, image_mask, joined, None, None, cfg.mixsel_weight)
        selector = selector_tokens(vertical, first, by_image=True) if select else plain_selector
        mixed = batch["mix_image"]
        if task == "i2t":
            _, text_mask = self._masks(draws, "mixsel/", everything, prefix_mask(target_len, n_text))
            inputs = Inputs("i2t", mixed, torch.zeros_like(everything), target_text, text_mask, target_len, selector)
            return Pass(name, inputs, mixed, None, target_text, text_mask, length_classes(target_len, n_text),
                        cfg.mixsel_weight)
        # IT2IT: only the selected half and the selected caption are masked (the image subset uses floor, as the
        # official subset branch does); the other half and caption stay visible.
        half = image_half(vertical, first, self.grid)
        image_mask, text_mask = self._masks(draws, "mixsel/", half, span_mask(span[:, 0], span[:, 1], n_text),
                                            image_rounding="floor")
        inputs = Inputs("i2t", mixed, image_mask, joined, text_mask, joined_len, selector)
        return Pass(name, inputs, mixed, image_mask, joined, text_mask, None, cfg.mixsel_weight)

    # ---- running ----

    def run_pass(self, p: Pass, totals: torch.Tensor, stats: dict[str, float]) -> tuple[torch.Tensor, Outputs]:
        """Forward one pass; its weighted loss, normalised by the all-reduced `totals` (TERMS order)."""
        model = self.parts["model"].module
        out = model(p.inputs, image_query=p.image_loss, text_query=p.text_loss, length=p.length_target is not None)
        world = self.accelerator.num_processes
        scale = world / totals.clamp(min=1.0)  # mean over the global batch; DDP then averages over processes
        loss = torch.zeros((), device=totals.device)
        terms = [("image", out.image_logits, p.image_target, p.image_loss),
                 ("text", out.text_logits, p.text_target, p.text_loss)]
        for i, (term, logits, target, where) in enumerate(terms):
            if where is None:
                continue
            ce, hits = token_ce(logits, target[where], self.cfg.label_smoothing)
            loss = loss + ce * scale[i]
            stats[f"{p.name}/{term}"] = float(ce.detach() * scale[i])
            stats[f"{p.name}/{term}_acc"] = float(hits * scale[i])
        if p.length_target is not None:
            logits = out.length_logits.float()
            ce = F.cross_entropy(logits, p.length_target, reduction="sum") * scale[2]
            loss = loss + self.cfg.length_weight * ce
            stats[f"{p.name}/length"] = float(ce.detach())
            stats[f"{p.name}/length_acc"] = float((logits.argmax(-1) == p.length_target).sum() * scale[2])
        return p.weight * loss, out

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        device = self.accelerator.device
        batch = {k: v.to(device) for k, v in batch.items()}
        draws = Draws(self.seed, step, self.global_batch, batch_offsets(batch["index"], step, self.global_batch),
                      device)
        task = self.draw_task(draws)
        main = self.plain_pass(batch, task, draws)
        passes = [main]
        if self.cfg.unroll and task != "it2it":  # UnrollMask keeps the cross-modal context clean: never IT2IT
            passes.append(self.unroll_pass(main, self.unroll_mask(main, draws)))
        if self.cfg.mixsel:
            passes.append(self.mixsel_pass(batch, task, draws))
        # One all-reduce of every pass's counts (a fixed-size vector, so processes drawing different tasks still
        # issue the same collectives).
        counts = torch.zeros(3, len(TERMS), device=device)
        for i, p in enumerate(passes):
            counts[i] = torch.stack(p.counts()).to(device)
        totals = self.accelerator.reduce(counts, "sum") if self.accelerator.num_processes > 1 else counts

        stats: dict[str, float] = {}
        total = 0.0
        model = self.parts["model"].module
        for i, p in enumerate(passes):
            loss, out = self.run_pass(p, totals[i], stats)
            if i == 0 and len(passes) > 1 and passes[1].name.startswith("unroll/"):
                self.fill_unroll(passes[1], main, out, draws)
            last = i == len(passes) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                self.accelerator.backward(loss)
            total += float(loss.detach())
        stats["loss"] = total
        stats["tokens"] = float(sum(p.inputs.image.numel() + p.inputs.text.numel() + 4 * len(p.inputs.text)
                                    for p in passes))
        return stats
