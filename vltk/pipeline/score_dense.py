"""`vltk score SAMPLES OUT` of a dense samples artifact (`vltk sample --task dense`): UViM's metrics (GIVT §5.2,
Tab. 3) against the shards' true labels of the same records, beside a trivial baseline and the label autoencoder's
own reconstruction (what stage II could reach at best).

    vltk score build/demo/samples-uvim-panoptic build/demo/scores-uvim-panoptic

Panoptic: PQ, SQ and RQ over All / Things / Stuff (`vltk.metrics.dense.PanopticQuality`, the categories' isthing
split), read back from the samples' COCO panoptic PNGs and segments_info (so the files that are scored are the ones a
COCO evaluator would read). Depth: RMSE, AbsRel and delta1 in metres (`DepthMetrics`) of the 16-bit millimetre PNGs
against the measured depth. Baseline (`vltk.data.dense.baseline`, as `vltk tokenize label` reports it): panoptic,
every pixel the train split's most frequent class as one segment; depth, the train split's mean depth per pixel.
Reconstruction: the true labels through the stage-I autoencoder (posterior mean or quantised codes) and back.

The artifact holds `metrics.json` ({"prediction", "baseline", "reconstruction"} each the task's metric, and the
count), `report.html` (the headline numbers, then for a few records the image, the truth and the prediction side by
side, colourised, then the full table and the provenance), and the manifest repeats the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState

from vltk import artifacts
from vltk.data import depth as depth_png
from vltk.data import panoptic as panoptic_png
from vltk.data.dense import (BASELINE_IS, LabelSpec, baseline, dense_categories, example, ordered_batches,
                             save_examples, scored_truth)
from vltk.errors import VltkError
from vltk.labeltok.artifact import load_label_tokenizer
from vltk.labeltok.maps import panoptic_map
from vltk.labeltok.model import LabelAutoencoder
from vltk.metrics.dense import DenseScore
from vltk.metrics.report import flat, image_tag, page, table, value
from vltk.pipeline.tokenize_label import label_spec
from vltk.records import SamplesContents, Stage
from vltk.train.launch import begin_shared

STAGE = Stage.SCORE
REPORT = "report.html"
SHOWN = 8  # records shown side by side in the report
KINDS = ("prediction", "baseline", "reconstruction")


def read_prediction(samples: Path, row: dict[str, Any], annotation: dict[str, Any] | None,
                    spec: LabelSpec) -> np.ndarray:
    """A row's machine-format prediction read back: (H, W, 2) [semantic, instance] or (H, W) float32 metres."""
    if spec.task == "panoptic":
        ids = panoptic_png.decode_png((samples / row["files"]["panoptic"]).read_bytes())
        return panoptic_map(ids, annotation["segments_info"], spec.categories)
    return depth_png.to_metres(depth_png.decode_png((samples / row["files"]["depth"]).read_bytes()))


def run(cfg: Any, samples: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Score the dense samples at `samples` into the artifact `out` (the main process scores; `cfg`, score's config,
    is recorded: none of its metrics applies here)."""
    samples, out = Path(samples), Path(out)
    contents = SamplesContents.read(samples)
    gen = artifacts.upstream(samples, "generator")
    label_tok, shards = artifacts.upstream(gen, "label_tok"), artifacts.upstream(gen, "shards")
    rows = [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines() if line]
    if not rows:
        raise VltkError(f"{samples} holds no samples")
    state = PartialState(cpu=cpu)
    label_model, labels = load_label_tokenizer(label_tok, state.device)
    spec = label_spec(label_model.cfg, dense_categories(shards) if labels.task == "panoptic" else None)
    split = contents.extra["split"]
    job = begin_shared(state, out, stage=STAGE, config=cfg, inputs={"samples": samples}, force=force)
    if job is None:
        return out
    if state.is_main_process:
        metrics = {"task": "dense", "dense_task": labels.task, "generator": contents.generator,
                   "bottleneck": contents.extra.get("bottleneck"), "count": len(rows), "split": split,
                   **_score(samples, rows, spec, shards, split, label_model, job.work / "examples.png"),
                   "baseline_is": BASELINE_IS[labels.task]}
        artifacts.write_json_atomic(job.work / "metrics.json", metrics)
        _report(job.work / REPORT, metrics, job.work / "examples.png", samples)
        job.publish({**metrics, "report": REPORT, "summary": _summary(metrics)})
    state.wait_for_everyone()
    return out


@torch.no_grad()
def _score(samples: Path, rows: list[dict[str, Any]], spec: LabelSpec, shards: Path, split: str,
           label_model: LabelAutoencoder, grid_file: Path) -> dict[str, Any]:
    """{kind: the task's metric} of the rows' predictions, the baseline and the autoencoder's reconstructions of the
    same records; writes the examples' grid."""
    annotations = ({a["image_id"]: a for a in json.loads((samples / "panoptic.json").read_text())["annotations"]}
                   if spec.task == "panoptic" else {})
    trivial = torch.from_numpy(baseline(shards, "train", spec))
    scores = {kind: DenseScore(spec) for kind in KINDS}
    examples: list[np.ndarray] = []
    done = 0
    for images, labels, records in ordered_batches(shards, split, spec, 16, len(rows)):
        batch = rows[done:done + len(records)]
        if [r["key"] for r in batch] != [s.key for s in records]:
            raise VltkError(f"{samples}'s rows are not the first records of {shards}'s '{split}' split any more")
        pred = torch.from_numpy(np.stack([read_prediction(samples, r, annotations.get(r["key"]), spec)
                                          for r in batch]))
        z, _ = label_model.encode(labels.to(next(label_model.parameters()).device))  # vae: the mean; vq: codewords
        recon = label_model.predict(label_model.decode(z)).cpu()
        truth = scored_truth(spec, labels, records)
        for kind, maps in zip(KINDS, (pred, trivial.expand_as(truth), recon)):
            scores[kind].update(maps, truth)
        examples += [example(*e, spec) for e in list(zip(images, truth, pred))[:SHOWN - len(examples)]]
        done += len(records)
    if done < len(rows):
        raise VltkError(f"{shards}'s '{split}' split has {done} labelled records, {samples} {len(rows)} rows")
    save_examples(examples, grid_file)
    return {kind: scores[kind].compute() for kind in KINDS}


def headline(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, value) of the numbers a reader looks at first: PQ (All) or RMSE and delta1, for each kind."""
    if metrics["dense_task"] == "panoptic":
        return [(f"PQ ({kind})", metrics[kind]["All"]["pq"]) for kind in KINDS]
    return [(f"{name} ({kind})", metrics[kind][key]) for kind in KINDS
            for name, key in (("RMSE m", "rmse"), ("delta1", "delta1"))]


def _summary(metrics: dict[str, Any]) -> str:
    numbers = ", ".join(f"{label} {x:.3f}" for label, x in headline(metrics))
    return f"{metrics['count']} {metrics['dense_task']} maps of {metrics['generator']}: {numbers}"


def _report(file: Path, metrics: dict[str, Any], examples: Path, samples: Path) -> None:
    numbers = table([(label, value(x)) for label, x in headline(metrics)], ("metric", "value"))
    chain = table([(str(path), manifest.get("stage", ""), manifest.get("contents", {}).get("summary", ""))
                   for path, manifest in artifacts.provenance(samples)], ("artifact", "stage", "summary"))
    parts = [f"<p>{metrics['count']} records of the '{metrics['split']}' split; baseline: "
             f"{metrics['baseline_is']}; reconstruction: the stage-I autoencoder's own.</p>", numbers,
             "<h2>Image (top), truth (middle), prediction (bottom)</h2>", image_tag(examples),
             "<h2>All metrics</h2>", table([(k, value(v)) for k, v in flat(metrics)], ("metric", "value")),
             "<h2>Provenance</h2>", chain]
    artifacts.write_text_atomic(file, page(f"UViM {metrics['dense_task']}: {metrics['generator']}", parts))
