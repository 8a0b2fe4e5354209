"""Dense-prediction metrics (vltk.metrics.dense): PQ on hand-computed label maps and against a re-statement of
cocodataset/panopticapi's pq_compute on random ones, streaming against one-shot, the missing-torchmetrics line; depth
errors on a hand-computed pair of images and against numpy (UViM's per-image means)."""

from __future__ import annotations

import math
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from vltk.errors import VltkError
from vltk.metrics.dense import DepthMetrics, PanopticQuality

V, PERSON, CAR, SKY, BUS = 0, 1, 2, 3, 4  # void, things (bus never appears), stuff
THINGS, STUFF = [PERSON, CAR, BUS], [SKY]


def flat(result: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"All/pq": ..., "Things/n": ...}: pytest.approx compares flat mappings only."""
    return {f"{group}/{key}": value for group, scores in result.items() for key, value in scores.items()}


def pq_or_skip(things=THINGS, stuff=STUFF) -> PanopticQuality:
    pytest.importorskip("torchmetrics")
    return PanopticQuality(things, stuff)


def test_pq_by_hand():
    # Truth (category, instance) on 4 x 6 pixels: person #1 `a` (6 px), person #2 `b` (6 px), car #1 `c` (2 px),
    # sky `s` (7 px), void `.` (3 px).
    #   a a a a s s          A A A A S S     prediction: person #1 `A` (5 px), person #2 `B` (3 px), car #5 `K`
    #   a a b b s s          A K K K S S     (4 px), car #2 `k` (2 px), sky `S` (10 px, instance ids ignored)
    #   b b b b s s          B B B K S S
    #   . . . c c s          S k k S S S
    true_cat = np.array([[1, 1, 1, 1, 3, 3], [1, 1, 1, 1, 3, 3], [1, 1, 1, 1, 3, 3], [0, 0, 0, 2, 2, 3]])
    true_ins = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 2, 2, 0, 0], [2, 2, 2, 2, 0, 0], [0, 0, 0, 1, 1, 0]])
    pred_cat = np.array([[1, 1, 1, 1, 3, 3], [1, 2, 2, 2, 3, 3], [1, 1, 1, 2, 3, 3], [3, 2, 2, 3, 3, 3]])
    pred_ins = np.array([[1, 1, 1, 1, 0, 0], [1, 5, 5, 5, 0, 0], [2, 2, 2, 5, 0, 0], [9, 2, 2, 0, 0, 0]])
    # Matches (same category, IoU > 0.5; a prediction's pixels on void truth leave its union):
    #   A-a: intersection 5, union 5 + 6 - 5 = 6, IoU 5/6           -> TP
    #   B-b: intersection 3, union 3 + 6 - 3 = 6, IoU exactly 0.5   -> no match: B is a FP, b a FN
    #   S-s: intersection 7, union 10 + 7 - 7 - 1 (S on void) = 9, IoU 7/9 -> TP (7/10 if void were counted)
    #   K (car) overlaps no car -> FP; k lies wholly on void (2/2 > 1/2) -> ignored, not a FP; c is under S -> FN.
    # Per category (SQ = IoU sum / TP, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ x RQ):
    #   person TP 1 FP 1 FN 1: SQ 5/6, RQ 1/2, PQ 5/12;  car TP 0 FP 1 FN 1: 0, 0, 0;  sky TP 1: SQ 7/9, RQ 1, PQ 7/9;
    #   bus: TP + FP + FN = 0, left out of every average.
    # Things (n 2): PQ (5/12 + 0)/2 = 5/24, SQ (5/6 + 0)/2 = 5/12, RQ (1/2 + 0)/2 = 1/4. Stuff (n 1): 7/9, 7/9, 1.
    # All (n 3): PQ (5/12 + 0 + 7/9)/3 = 43/108, SQ (5/6 + 0 + 7/9)/3 = 29/54, RQ (1/2 + 0 + 1)/3 = 1/2
    # (the average of PQ is not the product of the averages of SQ and RQ: 29/54 x 1/2 != 43/108).
    pq = pq_or_skip()
    pq.update(pred_cat, pred_ins, true_cat, true_ins)
    expected = {"All": {"pq": 43 / 108, "sq": 29 / 54, "rq": 1 / 2, "n": 3},
                "Things": {"pq": 5 / 24, "sq": 5 / 12, "rq": 1 / 4, "n": 2},
                "Stuff": {"pq": 7 / 9, "sq": 7 / 9, "rq": 1.0, "n": 1}}
    assert flat(pq.compute()) == pytest.approx(flat(expected), rel=1e-6)  # torchmetrics divides in float32
    assert flat(panopticapi_pq([(pred_cat, pred_ins, true_cat, true_ins)])) == pytest.approx(flat(expected), rel=1e-12)


def test_predicted_void_counts_against_the_truth_as_in_panopticapi():
    # Truth: person #1 (4 px), car #1 (2 px), sky (2 px). The prediction leaves 4 pixels void.
    #   p p p p        P P . .     person: intersection 2, union 2 + 4 - 2 = 4 (the void-predicted pixels stay in
    #   c c s s        . . S S     it), IoU 0.5 -> FP 1, FN 1; car: FN 1 (wholly predicted void, still missed);
    #                              sky: IoU 1. Things PQ 0 over n 2, Stuff 1, All 1/3.
    # torchmetrics alone leaves predicted void out of the union (person IoU 2/2, a TP) and drops the car's FN.
    true_cat, true_ins = np.array([[1, 1, 1, 1], [2, 2, 3, 3]]), np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    pred_cat, pred_ins = np.array([[1, 1, 0, 0], [0, 0, 3, 3]]), np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    pq = pq_or_skip()
    pq.update(pred_cat, pred_ins, true_cat, true_ins)
    result = pq.compute()
    assert result["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
    assert result["All"] == pytest.approx({"pq": 1 / 3, "sq": 1 / 3, "rq": 1 / 3, "n": 3})
    assert flat(result) == pytest.approx(flat(panopticapi_pq([(pred_cat, pred_ins, true_cat, true_ins)])))


def random_images(seed: int, count: int = 12) -> list[tuple[np.ndarray, ...]]:
    """(pred category, pred instance, true category, true instance), each (12, 12): a truth of 3 x 3 blocks of random
    labels (void, people, cars, sky, bus) and a prediction that overwrites a random rectangle and 15% of the pixels."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        true_cat = np.kron(rng.integers(0, 5, (3, 3)), np.ones((4, 4), int))
        true_ins = np.kron(rng.integers(1, 3, (3, 3)), np.ones((4, 4), int))
        pred_cat, pred_ins = true_cat.copy(), true_ins.copy()
        top, left = rng.integers(0, 8, 2)
        pred_cat[top:top + 5, left:left + 5], pred_ins[top:top + 5, left:left + 5] = rng.integers(0, 5), 3
        noise = rng.random((12, 12)) < 0.15
        pred_cat[noise], pred_ins[noise] = rng.integers(0, 5, noise.sum()), rng.integers(1, 3, noise.sum())
        images.append((pred_cat, pred_ins, true_cat, true_ins))
    return images


def test_pq_equals_panopticapi_on_random_images():
    images = random_images(seed=0)
    pq = pq_or_skip()
    for image in images:
        pq.update(*image)
    result = pq.compute()
    assert result["Things"]["n"] == 3 and result["Stuff"]["n"] == 1 and 0 < result["All"]["pq"] < 1
    assert flat(result) == pytest.approx(flat(panopticapi_pq(images)), rel=1e-6)


def test_streaming_equals_one_shot():
    images = random_images(seed=1)
    one_by_one, batches, one_shot = pq_or_skip(), pq_or_skip(), pq_or_skip()
    for image in images:
        one_by_one.update(*(torch.as_tensor(m) for m in image))  # tensors and arrays alike
    for start, stop in [(0, 5), (5, 6), (6, 12)]:
        batches.update(*(np.stack(m[start:stop]) for m in zip(*images)))  # (B, 12, 12) each
    one_shot.update(*(np.stack(m) for m in zip(*images)))
    assert flat(one_by_one.compute()) == pytest.approx(flat(one_shot.compute()), rel=1e-12)
    assert flat(batches.compute()) == pytest.approx(flat(one_shot.compute()), rel=1e-12)


def test_things_and_stuff_split():
    # The same images scored with sky and bus as things and person as stuff: a category's scores follow it between
    # the groups, and All is the same mean over all present categories.
    images = random_images(seed=2)
    pq, swapped = pq_or_skip(), pq_or_skip(things=[SKY, BUS, CAR], stuff=[PERSON])
    for image in images:
        pq.update(*image)
    assert pq.compute()["Stuff"]["n"] == 1 and pq.compute()["Things"]["n"] == 3
    for image in images:  # person as stuff: its instance ids are ignored, so its own scores change
        swapped.update(*image)
    result = swapped.compute()
    assert result["Things"]["n"] == 3 and result["Stuff"]["n"] == 1
    assert flat(result) == pytest.approx(flat(panopticapi_pq(images, [SKY, BUS, CAR], [PERSON])), rel=1e-6)
    empty = pq_or_skip(things=[PERSON, CAR], stuff=[SKY, BUS])
    empty.update(np.full((2, 2), PERSON), np.ones((2, 2), int), np.full((2, 2), PERSON), np.ones((2, 2), int))
    assert empty.compute()["Things"]["pq"] == 1.0 and math.isnan(empty.compute()["Stuff"]["pq"])  # no stuff at all


def test_pq_refuses_unknown_categories_and_bad_category_sets():
    pq = pq_or_skip()
    maps = np.zeros((2, 2), int)
    with pytest.raises(VltkError, match=r"the truth has categories \[7\] that are neither things, stuff nor void"):
        pq.update(maps, maps, maps + 7, maps)
    with pytest.raises(VltkError, match="categories \\[3\\] are both things and stuff"):
        PanopticQuality([1, 3], [3])
    with pytest.raises(VltkError, match="category 0 is void"):
        PanopticQuality([0, 1], [3])
    with pytest.raises(VltkError, match="panoptic maps of different shapes"):
        pq.update(maps, maps, np.zeros((2, 3), int), maps)


def test_missing_torchmetrics_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # as if not installed, whether or not it is
    monkeypatch.setitem(sys.modules, "torchmetrics.detection", None)
    with pytest.raises(VltkError) as err:
        PanopticQuality(THINGS, STUFF)
    assert str(err.value) == "PQ needs torchmetrics: pip install 'vltk[dense]'"


def panopticapi_pq(images, things=THINGS, stuff=STUFF) -> dict[str, dict[str, float]]:
    """cocodataset/panopticapi's pq_compute (evaluation.py: pq_compute_single_core, then PQStat.pq_average for All,
    Things, Stuff) re-stated on label maps without crowd regions: a segment id is category x 1000 + instance (stuff
    instance 0), void is segment 0. An empty group is NaN (panopticapi divides by zero)."""
    stats = defaultdict(lambda: [0.0, 0, 0, 0])  # category -> [IoU sum, TP, FP, FN]
    for pred_cat, pred_ins, true_cat, true_ins in images:
        pred = np.where(pred_cat == 0, 0, pred_cat * 1000 + np.where(np.isin(pred_cat, stuff), 0, pred_ins)).ravel()
        true = np.where(true_cat == 0, 0, true_cat * 1000 + np.where(np.isin(true_cat, stuff), 0, true_ins)).ravel()
        pred_area, true_area, overlap = Counter(pred), Counter(true), Counter(zip(true, pred))
        true_matched, pred_matched = set(), set()
        for (t, p), intersection in overlap.items():
            if t == 0 or p == 0 or t // 1000 != p // 1000:
                continue
            iou = intersection / (pred_area[p] + true_area[t] - intersection - overlap.get((0, p), 0))
            if iou > 0.5:
                stats[t // 1000][0] += iou
                stats[t // 1000][1] += 1
                true_matched.add(t)
                pred_matched.add(p)
        for t in set(true_area) - true_matched - {0}:
            stats[t // 1000][3] += 1
        for p in set(pred_area) - pred_matched - {0}:
            if overlap.get((0, p), 0) / pred_area[p] <= 0.5:
                stats[p // 1000][2] += 1
    results = {}
    for name, group in [("All", [*things, *stuff]), ("Things", things), ("Stuff", stuff)]:
        rows = []
        for iou, tp, fp, fn in (stats[c] for c in group):
            if tp + fp + fn:
                rq = tp / (tp + 0.5 * fp + 0.5 * fn)
                rows.append((iou / (tp + 0.5 * fp + 0.5 * fn), iou / tp if tp else 0.0, rq))
        means = np.mean(rows, 0) if rows else [math.nan] * 3
        results[name] = {"pq": float(means[0]), "sq": float(means[1]), "rq": float(means[2]), "n": len(rows)}
    return results


def test_depth_by_hand():
    # Image 1: truth 1, 2, 4 m and 0 (no reading: left out); prediction 1.5, 2, 2 (and 7, unscored).
    #   errors 0.5, 0, -2: RMSE sqrt((0.25 + 0 + 4)/3) = sqrt(17/12); AbsRel (0.5/1 + 0/2 + 2/4)/3 = 1/3;
    #   max(p/t, t/p) = 1.5, 1, 2: delta1 1/3.
    # Image 2: truth 2, 2, 2 and 12 m (beyond 10 m: left out); prediction 2.5, 2, 2.
    #   RMSE sqrt(0.25/3) = sqrt(1/12); AbsRel (0.25 + 0 + 0)/3 = 1/12; ratios 1.25 (not < 1.25), 1, 1: delta1 2/3.
    # Means over the images: RMSE (sqrt(17/12) + sqrt(1/12))/2 = 0.7395 (pixel-pooled would be sqrt(4.5/6) = 0.866),
    # AbsRel (1/3 + 1/12)/2 = 5/24, delta1 (1/3 + 2/3)/2 = 1/2.
    truth = np.array([[[1.0, 2.0], [4.0, 0.0]], [[2.0, 2.0], [12.0, 2.0]]])
    pred = np.array([[[1.5, 2.0], [2.0, 7.0]], [[2.5, 2.0], [1.0, 2.0]]])
    depth = DepthMetrics()
    depth.update(pred, truth)
    expected = {"rmse": (math.sqrt(17 / 12) + math.sqrt(1 / 12)) / 2, "abs_rel": 5 / 24, "delta1": 1 / 2, "images": 2}
    assert depth.compute() == pytest.approx(expected, rel=1e-12)
    assert depth.compute()["rmse"] != pytest.approx(math.sqrt(4.5 / 6))


def test_depth_equals_numpy_and_streams():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5, 10.5, (7, 9, 11)).astype(np.float32)  # some beyond 10 m
    truth[rng.random(truth.shape) < 0.2] = 0.0  # missing readings
    pred = (truth * rng.uniform(0.7, 1.4, truth.shape)).astype(np.float32)
    depth = DepthMetrics()
    for start, stop in [(0, 1), (1, 4), (4, 7)]:
        depth.update(torch.from_numpy(pred[start:stop]), torch.from_numpy(truth[start:stop]))
    depth.update(pred[0], truth[0])  # one (H, W) image more: the first again
    rmse, abs_rel, delta1 = [], [], []
    for p, t in zip([*pred, pred[0]], [*truth, truth[0]]):  # UViM's nyu_depth evaluator, in numpy
        valid = (t > 1e-3) & (t < 10)
        p, t = p[valid].astype(np.float64), t[valid].astype(np.float64)
        rmse.append(np.sqrt(np.mean((t - p) ** 2)))
        abs_rel.append(np.mean(np.abs(t - p) / t))
        delta1.append(np.mean(np.maximum(t / p, p / t) < 1.25))
    expected = {"rmse": np.mean(rmse), "abs_rel": np.mean(abs_rel), "delta1": np.mean(delta1), "images": 8}
    assert depth.compute() == pytest.approx(expected, rel=1e-12)


def test_depth_refuses_mismatched_shapes_and_images_without_valid_depth():
    depth = DepthMetrics()
    with pytest.raises(VltkError, match=r"prediction \(2, 2\) and truth \(2, 3\)"):
        depth.update(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(VltkError, match="an image has no valid depth"):
        depth.update(np.ones((2, 2)), np.zeros((2, 2)))
