"""Dense-prediction metrics of UViM (Kolesnikov et al. 2022) and GIVT §4.2 / §5.2 (Table 3): COCO panoptic quality and
NYU Depth v2 depth errors, accumulated image by image over a data set.

    pq = PanopticQuality(things=[1, 2], stuff=[3])      # COCO: the categories' `isthing` split, ids as in the data
    for pred_cat, pred_ins, true_cat, true_ins in batches:       # each (H, W) or (B, H, W) integer maps
        pq.update(pred_cat, pred_ins, true_cat, true_ins)
    pq.compute()    # {"All": {"pq", "sq", "rq", "n"}, "Things": {...}, "Stuff": {...}}, fractions in [0, 1]

    depth = DepthMetrics()
    depth.update(pred_metres, true_metres)                       # (H, W) or (B, H, W) float maps
    depth.compute()  # {"rmse": m, "abs_rel": ..., "delta1": ..., "images": N}

    score = DenseScore(spec)        # a vltk.data.dense.LabelSpec's metric over whole label maps, as stages keep it
    score.update(pred, truth)       # panoptic (B, H, W, 2) [semantic, instance]; depth (B, H, W) metres
    score.compute()                 # the metric's dict, rounded to 4 decimals

Panoptic label maps, the convention of vltk: two integer maps of one shape per image, the semantic category of each
pixel and an instance id. A thing (a countable class: person, car) has one instance id per object, unique among that
class's objects in the image (1, 2, ...). A stuff class (sky, road) is one region per image: its instance id is 0 (any
other value is ignored). Category VOID = 0 is an unlabelled pixel, COCO panoptic's segment id 0 (and UViM's semantic 0):
its instance id is ignored. Crowd regions (COCO's `iscrowd` segments) have no label of their own: mark them void.

PQ is the definition of Kirillov et al. 2019 (Panoptic Segmentation, §4) as cocodataset/panopticapi computes it
(panopticapi/evaluation.py, `pq_compute`), here through torchmetrics' PanopticQuality: per image, a predicted and a
true segment of one category match when their IoU > 0.5 (exactly 0.5 is no match), the IoU leaving out the predicted
pixels that lie on void truth; per category over the data set SQ = (sum of matched IoUs) / TP, RQ = TP / (TP + FP/2 +
FN/2), PQ = SQ x RQ; an unmatched prediction that lies more than half on void truth is not a false positive. "All",
"Things" and "Stuff" average a category's PQ, SQ and RQ over the categories of that group with TP + FP + FN > 0 (`n`
of them), so the group's PQ is not its SQ x RQ; a group with none is NaN. Pixels a prediction leaves void count against
the truth as in panopticapi (in the union of a true segment, and a true segment left mostly void is a false negative),
where torchmetrics alone would ignore them: they go in as one extra stuff category whose scores are dropped. One
difference from panopticapi stays: crowd regions, which panopticapi keeps out of the matching and FN/FP counts but
inside the union of a prediction matched elsewhere, are plain void here.

Depth errors follow UViM's NYU evaluator (google-research/big_vision, big_vision/evaluators/proj/uvim/nyu_depth.py): in
metres, over the pixels whose true depth is in (1e-3, 10) m (NYU stores a missing reading as 0), each image's RMSE,
AbsRel = mean |pred - true| / true and delta1 = the share of pixels with max(pred/true, true/pred) < 1.25 are averaged
over the images (the per-image mean, not the pixel-pooled sqrt(sum of squares / all valid pixels) some papers use).
The caller gives the truth already cropped to the evaluation area (UViM: big_vision's `nyu_eval_crop`, 426 x 560 of
the 480 x 640 frame) and the prediction resized to it (UViM: nearest); the prediction is not clipped.
"""

from __future__ import annotations

import math
from typing import Any, Collection

import numpy as np
import torch

from vltk.data.dense import LabelSpec
from vltk.errors import VltkError

VOID = 0  # the category of unlabelled pixels (COCO panoptic's segment id 0)
GROUPS = {"All": (True, True), "Things": (True, False), "Stuff": (False, True)}  # name -> (has things, has stuff)
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0  # metres; UViM's NYU evaluator scores only the truth inside (MIN_DEPTH, MAX_DEPTH)

Maps = torch.Tensor | np.ndarray


def _torchmetrics_pq() -> type:
    try:
        from torchmetrics.detection import PanopticQuality as TorchmetricsPQ
    except ImportError:
        raise VltkError("PQ needs torchmetrics: pip install 'vltk[dense]'") from None
    return TorchmetricsPQ


def _batch(maps: Maps, what: str) -> torch.Tensor:
    """(H, W) or (B, H, W) integer maps as a (B, H, W) int64 tensor."""
    maps = torch.as_tensor(maps)
    if maps.dim() not in (2, 3) or maps.dtype.is_floating_point or maps.dtype == torch.bool:
        raise VltkError(f"{what} must be (H, W) or (B, H, W) integer maps, got {tuple(maps.shape)} {maps.dtype}")
    return (maps[None] if maps.dim() == 2 else maps).long()


def _categories(things: Collection[int], stuff: Collection[int]) -> tuple[set[int], set[int]]:
    things, stuff = {int(c) for c in things}, {int(c) for c in stuff}
    if things & stuff:
        raise VltkError(f"categories {sorted(things & stuff)} are both things and stuff")
    if VOID in things | stuff:
        raise VltkError(f"category {VOID} is void (unlabelled) and cannot be a thing or stuff category")
    if not things | stuff:
        raise VltkError("PQ needs at least one thing or stuff category")
    return things, stuff


def _check_known(categories: torch.Tensor, known: torch.Tensor, what: str) -> None:
    unknown = categories[~torch.isin(categories, known)].unique()
    if len(unknown):
        raise VltkError(f"{what} has categories {unknown.tolist()[:10]} that are neither things, stuff nor void "
                        f"({VOID})")


class PanopticQuality:
    """PQ / SQ / RQ of panoptic label maps, All / Things / Stuff, over the images given to `update` (see the module)."""

    def __init__(self, things: Collection[int], stuff: Collection[int]) -> None:
        self.things, self.stuff = _categories(things, stuff)
        self.known = torch.tensor(sorted(self.things | self.stuff | {VOID}))
        # The category a predicted void pixel becomes: a stuff class no truth has, so that torchmetrics counts those
        # pixels as panopticapi does (see the module); its own FP are dropped in compute.
        self.pred_void = max(self.known.tolist()) + 1
        # Truth void (nothing else: the truth is checked) is a category torchmetrics does not know, which it ignores.
        self.metric = _torchmetrics_pq()(things=self.things, stuffs=self.stuff | {self.pred_void},
                                         return_per_class=True, return_sq_and_rq=True)

    def update(self, pred_category: Maps, pred_instance: Maps, true_category: Maps, true_instance: Maps) -> None:
        """Adds images: four (H, W) maps of one image or (B, H, W) maps of B images of one size."""
        maps = [_batch(m, w) for m, w in ((pred_category, "pred_category"), (pred_instance, "pred_instance"),
                                           (true_category, "true_category"), (true_instance, "true_instance"))]
        if len({m.shape for m in maps}) > 1:
            raise VltkError(f"panoptic maps of different shapes: {[tuple(m.shape) for m in maps]}")
        pred_cat, pred_ins, true_cat, true_ins = maps
        _check_known(pred_cat, self.known, "the prediction")
        _check_known(true_cat, self.known, "the truth")
        void = pred_cat == VOID
        pred = torch.stack([pred_cat.masked_fill(void, self.pred_void), pred_ins.masked_fill(void, 0)], -1)
        self.metric.update(pred, torch.stack([true_cat, true_ins], -1))  # (B, H, W, 2): (category, instance)

    def compute(self) -> dict[str, dict[str, float]]:
        """{"All" | "Things" | "Stuff": {"pq", "sq", "rq": fractions in [0, 1], "n": categories averaged}}."""
        per_class = self.metric.compute()  # (C, 3): PQ, SQ, RQ per category, in torchmetrics' own order
        counts = self.metric.true_positives + self.metric.false_positives + self.metric.false_negatives  # (C,)
        # Read from the metric, not assumed: torchmetrics sorts it (things, then stuff, by id) only since its #2548.
        order = self.metric.cat_id_to_continuous_id  # category id -> row
        ids = sorted(order, key=order.get)
        present = counts > 0
        is_thing = torch.tensor([c in self.things for c in ids])
        is_stuff = torch.tensor([c in self.stuff for c in ids])  # False for pred_void: its scores are dropped
        return {name: _average(per_class, present & ((is_thing & things) | (is_stuff & stuff)))
                for name, (things, stuff) in GROUPS.items()}


def _average(per_class: torch.Tensor, keep: torch.Tensor) -> dict[str, float]:
    """panopticapi's pq_average: the mean of the kept rows of per_class (C, 3) [PQ, SQ, RQ]; NaN over none."""
    n = int(keep.sum())
    means = per_class[keep].mean(0).tolist() if n else [math.nan] * 3  # per_class is float64
    return {"pq": means[0], "sq": means[1], "rq": means[2], "n": n}


def depth_errors(pred: torch.Tensor, truth: torch.Tensor, min_depth: float = MIN_DEPTH,
                 max_depth: float = MAX_DEPTH) -> tuple[float, float, float]:
    """(RMSE in metres, AbsRel, delta1) of one image's (H, W) depths over the pixels with truth in (min, max)."""
    valid = (truth > min_depth) & (truth < max_depth)
    if not valid.any():
        raise VltkError(f"an image has no valid depth: no true depth in ({min_depth}, {max_depth}) m")
    p, t = pred[valid].double(), truth[valid].double()  # (V,) each
    rmse = (p - t).square().mean().sqrt()
    abs_rel = ((p - t).abs() / t).mean()
    delta1 = (torch.maximum(p / t, t / p) < 1.25).double().mean()  # p = 0 gives t/p = inf: not within 1.25
    return rmse.item(), abs_rel.item(), delta1.item()


class DepthMetrics:
    """RMSE, AbsRel and delta1 (< 1.25) of depth maps in metres, each the mean of the per-image values (see the
    module), over the images given to `update`."""

    def __init__(self, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.sums = np.zeros(3)  # running sums of the per-image RMSE, AbsRel, delta1
        self.images = 0

    def update(self, pred: Maps, truth: Maps) -> None:
        """Adds images: (H, W) depth maps of one image or (B, H, W) of B images, prediction and truth alike."""
        pred, truth = torch.as_tensor(pred), torch.as_tensor(truth)
        if pred.shape != truth.shape or pred.dim() not in (2, 3):
            raise VltkError(f"depth maps must be (H, W) or (B, H, W) of one shape, got prediction "
                            f"{tuple(pred.shape)} and truth {tuple(truth.shape)}")
        for p, t in zip(pred.reshape(-1, *pred.shape[-2:]), truth.reshape(-1, *truth.shape[-2:])):
            self.sums += depth_errors(p, t, self.min_depth, self.max_depth)
            self.images += 1

    def compute(self) -> dict[str, float]:
        """{"rmse" (metres), "abs_rel", "delta1": means over the images; "images": how many}."""
        rmse, abs_rel, delta1 = self.sums / self.images if self.images else [math.nan] * 3
        return {"rmse": float(rmse), "abs_rel": float(abs_rel), "delta1": float(delta1), "images": self.images}


class DenseScore:
    """A dense task's metric over whole label maps (`vltk.data.dense.scored_truth`'s layout): PanopticQuality with the
    spec's things / stuff split, or DepthMetrics in its depth range."""

    def __init__(self, spec: LabelSpec) -> None:
        self.panoptic = spec.task == "panoptic"
        self.meter = (PanopticQuality(spec.categories.things, spec.categories.stuff) if self.panoptic
                      else DepthMetrics(spec.min_depth, spec.max_depth))

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        """pred, truth: panoptic (B, H, W, 2) [semantic, instance]; depth (B, H, W) metres."""
        if self.panoptic:
            self.meter.update(pred[..., 0], pred[..., 1], truth[..., 0], truth[..., 1])
        else:
            self.meter.update(pred, truth)

    def compute(self) -> dict[str, Any]:
        """The metric's dict with its floats rounded to 4 decimals, as the artifacts keep them."""
        return _rounded(self.meter.compute())


def _rounded(result: dict[str, Any]) -> dict[str, Any]:
    return {k: _rounded(v) if isinstance(v, dict) else round(v, 4) if isinstance(v, float) else v
            for k, v in result.items()}
