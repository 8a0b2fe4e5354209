"""`vltk score`: metrics of a samples artifact: caption metrics, and the shapes judge on images and captions.

    vltk score build/demo/samples-t2i build/demo/scores-t2i       # judge: do the images show what the prompts say?
    vltk score build/demo/samples-i2t build/demo/scores-i2t       # BLEU / METEOR / ROUGE-L / CIDEr + the judge

By task:
- t2i, inpaint: the judge reads each image back into shapes and checks its prompt (whole caption, count, shape,
  colour, size, position), over all prompts and separately over those holding a held-out colour-shape pair;
- i2t, infill: caption metrics (pycocoevalcap, every reference caption of the image) and the judge on each generated
  caption against its image;
- it2it: the judge on each generated caption against its own generated image (do the pairs agree?).
The judge applies to the built-in shapes data; elsewhere its parse rate says it read no caption, and only the caption
metrics count. The artifact holds `metrics.json` and a self-contained `report.html` (metric tables, the samples with
their prompts or captions, the tokenizer's reconstructions and the generator's loss curves, and the provenance chain);
the manifest repeats the metrics.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vltk import artifacts
from vltk.errors import VltkError
from vltk.metrics.captions import caption_metrics
from vltk.metrics.judge import check, detect, parse_caption, summarize
from vltk.metrics.report import write_report

STAGE = "score"
REPORT = "report.html"
CAPTION_TASKS = ("i2t", "infill")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    meteor: bool = True  # needs Java; ~8 s to start
    spice: bool = False  # needs the Stanford CoreNLP 3.6.0 jars in pycocoevalcap's spice/lib (no download offline)


def judge(rows: list[dict[str, Any]], root: Path, caption_field: str) -> dict[str, Any]:
    """The judge's accuracies of each row's caption (`prompt` or `caption`) against its image, overall and on the rows
    holding a held-out colour-shape combination."""
    verdicts, heldout = [], []
    for row in rows:
        with Image.open(root / row["file"]) as image:
            seen = detect(np.asarray(image.convert("RGB")))
        caption = row[caption_field] or ""
        verdict = check(caption, parse_caption(caption), seen)
        verdicts.append(verdict)
        if row.get("heldout"):
            heldout.append(verdict)
    result: dict[str, Any] = {"all": _rounded(summarize(verdicts))}
    if heldout:
        result["heldout"] = _rounded(summarize(heldout))
    return result


def _rounded(summary: dict[str, float | int]) -> dict[str, float | int]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}


def run(cfg: ScoreConfig, samples: Path, out: Path, *, force: bool = False) -> Path:
    samples, out = Path(samples), Path(out)
    contents = artifacts.open_artifact(samples, "sample")["contents"]
    task = contents["task"]
    rows = [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines() if line]
    if not rows:
        raise VltkError(f"{samples} holds no samples")
    job = artifacts.begin(out, stage=STAGE, config=cfg, inputs={"samples": samples}, force=force)
    if job is None:
        return out
    metrics: dict[str, Any] = {"task": task, "generator": contents["generator"], "count": len(rows)}
    if task in CAPTION_TASKS:
        scored = [row for row in rows if row.get("references")]
        metrics["captions"] = caption_metrics({str(r["index"]): r["references"] for r in scored},
                                              {str(r["index"]): r["caption"] for r in scored},
                                              meteor=cfg.meteor, spice=cfg.spice)
    metrics["judge"] = judge(rows, samples, "prompt" if task in ("t2i", "inpaint") else "caption")
    artifacts.write_json_atomic(job.work / "metrics.json", metrics)
    write_report(job.work / REPORT, metrics, samples, rows, artifacts.provenance(samples))
    return job.publish({**metrics, "report": REPORT, "summary": _summary(metrics)})


def _summary(metrics: dict[str, Any]) -> str:
    parts = [f"{metrics['count']} {metrics['task']} samples of {metrics['generator']}"]
    if "captions" in metrics:
        parts.append(f"CIDEr {metrics['captions']['CIDEr']:.3f}, BLEU-4 {metrics['captions']['BLEU-4']:.3f}")
    overall = metrics["judge"]["all"]
    if overall.get("parsed"):
        parts.append(f"judge {overall['whole']:.1%} whole-caption (shape {overall['shape']:.0%}, colour "
                     f"{overall['color']:.0%}, position {overall['position']:.0%})")
    return ", ".join(parts)
