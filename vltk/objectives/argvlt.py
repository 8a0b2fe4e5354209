"""ARGVLT's training objective (MAGVLT App. A): one order per step, next-token losses on the whole sequence.

    objective = ARGVLTObjective(order_weights=(1.0, 1.0), generation_weight=0.9, condition_weight=0.1)
    task = ARGVLTTask(parts, objective, accelerator, global_batch=256, seed=0)
    train(task, data, train_cfg, accelerator=accelerator, work=work)      # vltk.train.loop

Each optimiser step draws its order, t2i (text, then image) or i2t (image, then text), from `order_weights`: one draw
for the whole global batch ("global"), or one per process ("rank": the draw is salted with the process index, so the
processes of one step mix orders; with one process both modes draw the same). Losses cover the whole sequence: the
generated modality with weight 0.9 and the conditioning one with 0.1 (the paper's numbers; RQ-Transformer's CC3M config
has the same img_weight / txt_weight). Each modality's loss is the label-smoothed CE mean over its valid tokens of the
whole global batch: every image token, and the text up to and including its first EOS (pads are keys, never targets).

Condition dropout (`cond_dropout` p, off in the paper; Muse, Chang et al. 2023, drops the text with p = 0.1) trains
the null condition that classifier-free guidance (Ho & Salimans 2022) contrasts with at sampling time
(`vltk.sampling.argvlt`): with probability p, one keyed draw per sample, a t2i sample reads the empty caption and an
i2t sample the null image (`vltk.models.argvlt.drop_condition`). The generated modality keeps its loss (the
unconditional model); the dropped condition takes none, since it is not data: the empty caption is no caption to
model, and the null image's ids are no codes.

Logged: "loss"; per order drawn this step by any process "<order>/image", "<order>/text" (the CE means) and
"<order>/image_acc", "<order>/text_acc" (argmax hits / tokens), all over the global batch (a modality without a
target in it, a condition dropped for every sample, is left out); "order/<order>", the share of the global batch
trained in that order; and the tokens fed (for the loop's tokens/s). The batch keys read are "index", "image", "text"
and "text_len".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from accelerate import Accelerator

from vltk.config import require_range
from vltk.models.argvlt import Order, drop_condition
from vltk.objectives.common import Draws, GlobalMean, batch_offsets, token_ce
from vltk.train.loop import TOKENS, Part, unwrap

ORDERS: tuple[Order, Order] = ("t2i", "i2t")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ARGVLTObjective:
    order_weights: tuple[float, float] = (1.0, 1.0)  # (t2i, i2t); the paper's "T2I & I2T" model trains both
    order_draw: Literal["global", "rank"] = "global"  # one order per step for all processes, or one per process
    generation_weight: float = 0.9  # the modality that comes second (MAGVLT App. A)
    condition_weight: float = 0.1  # the modality that comes first
    label_smoothing: float = 0.1
    cond_dropout: float = 0.0  # P(t2i caption -> empty caption, i2t image -> null image); the paper: 0, Muse: 0.1

    def __post_init__(self) -> None:
        if len(self.order_weights) != 2 or min(self.order_weights) < 0 or sum(self.order_weights) <= 0:
            raise ValueError(f"order_weights must be two weights >= 0 (t2i, i2t), not both 0; got {self.order_weights}")
        if self.order_draw not in ("global", "rank"):
            raise ValueError(f"order_draw must be 'global' or 'rank', got {self.order_draw!r}")
        require_range(self, "generation_weight", "condition_weight", low=0)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.cond_dropout <= 1:
            raise ValueError(f"cond_dropout must be in [0, 1], got {self.cond_dropout!r}")


def draw_order(objective: ARGVLTObjective, draws: Draws, rank: int) -> Order:
    """This step's order for process `rank` (the same on every process unless order_draw is "rank")."""
    salt = rank if objective.order_draw == "rank" else 0
    return ORDERS[draws.choice("order", objective.order_weights, salt=salt)]


class ARGVLTTask:
    """One micro-batch of ARGVLT training (the `Task` of vltk.train.loop); the model is `parts["model"]`."""

    def __init__(self, parts: dict[str, Part], cfg: ARGVLTObjective, accelerator: Accelerator, *, global_batch: int,
                 seed: int):
        self.parts, self.cfg, self.accelerator = parts, cfg, accelerator
        self.global_batch, self.seed = global_batch, seed
        self.reduce_sum = lambda t: accelerator.reduce(t, "sum")
        self.mean = GlobalMean(self.reduce_sum, accelerator.num_processes)
        self.model_cfg = unwrap(accelerator, parts["model"].module).cfg  # the null condition's ids

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        cfg, device = self.cfg, self.accelerator.device
        offsets = batch_offsets(batch["index"], step, self.global_batch)
        draws = Draws(self.seed, step, self.global_batch, offsets, device)
        order = draw_order(cfg, draws, self.accelerator.process_index)
        image, text, text_len = (batch[k].to(device) for k in ("image", "text", "text_len"))
        drop = draws.uniform("cond_drop") < cfg.cond_dropout  # (b,): one keyed draw per sample, whatever the split
        image_query = torch.ones_like(image, dtype=torch.bool)  # (b, N)
        text_query = torch.arange(text.shape[1], device=device) < text_len.unsqueeze(1)  # (b, C): caption + EOS
        if order == "t2i":  # a dropped condition takes no loss (module docstring)
            text_query = text_query & ~drop.unsqueeze(1)
        else:
            image_query = image_query & ~drop.unsqueeze(1)
        fed_image, fed_text = drop_condition(order, image, text, drop, self.model_cfg)  # the model's inputs
        out = self.parts["model"].module(order, fed_image, fed_text, image_query=image_query, text_query=text_query)
        image_ce, image_hits = token_ce(out.image_logits, image[image_query], cfg.label_smoothing)
        text_ce, text_hits = token_ce(out.text_logits, text[text_query], cfg.label_smoothing)
        image_count, text_count = image_query.sum(), text_query.sum()
        image_loss, text_loss = self.mean(image_ce, image_count), self.mean(text_ce, text_count)
        generated, condition = (image_loss, text_loss) if order == "t2i" else (text_loss, image_loss)
        loss = cfg.generation_weight * generated + cfg.condition_weight * condition
        self.accelerator.backward(loss)
        counts = {"image": (image_ce, image_hits, image_count), "text": (text_ce, text_hits, text_count)}
        fed = image.shape[0] * (1 + image.shape[1] + text.shape[1])  # 2 + N + C tokens, all but the last fed
        return {"loss": loss.item(), **self._order_metrics(order, counts, image.shape[0]), TOKENS: float(fed)}

    def _order_metrics(self, order: Order, counts: dict[str, tuple[torch.Tensor, ...]],
                       samples: int) -> dict[str, float]:
        """Each order's CE means, accuracies and share of samples over the global batch. The sums of every process
        are all-reduced, so that every process logs the same keys (the loop averages the processes' values key by
        key) and the values are global means even when the processes train different orders."""
        # (orders, 7): image CE sum, hits, tokens, text CE sum, hits, tokens, samples.
        sums = torch.zeros(len(ORDERS), 7, dtype=torch.float64, device=self.accelerator.device)
        mine = [t.detach().double() for modality in ("image", "text") for t in counts[modality]]
        sums[ORDERS.index(order)] = torch.stack([*mine, mine[0].new_tensor(samples)])
        if self.accelerator.num_processes > 1:
            sums = self.reduce_sum(sums)
        metrics, total = {}, sums[:, 6].sum().item()
        for name, (image_ce, image_hits, images, text_ce, text_hits, texts, drawn) in zip(ORDERS, sums.tolist()):
            metrics[f"order/{name}"] = drawn / total
            for modality, ce, hits, count in (("image", image_ce, image_hits, images),
                                              ("text", text_ce, text_hits, texts)):
                if count:  # none when the order was not drawn, or every condition of it was dropped
                    metrics.update({f"{name}/{modality}": ce / count, f"{name}/{modality}_acc": hits / count})
        return metrics
