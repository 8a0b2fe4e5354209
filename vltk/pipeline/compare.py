"""`vltk compare`: several scores artifacts side by side in one report, e.g. MAGVLT against ARGVLT at equal steps.

    vltk compare build/demo/scores-t2i build/demo/scores-argvlt-t2i build/demo/compare

Each scores artifact is one column, labelled by its task and by the generator behind it (kind, size, parameters,
training steps and seconds, or "released weights" for `vltk import magvlt`, read from the chain of manifests); each
metric is one row, blank where a column lacks it.
Above that table, the headline numbers of each artifact (as its own report shows them) make one row each; the sample
grids follow, side by side for each task. The artifact holds `comparison.json` (the columns: label, task,
generator, training and metrics) and a self-contained `report.html`.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any

from vltk import artifacts
from vltk.errors import VltkError
from vltk.metrics.report import flat, headline, headline_table, image_tag, page, table, value
from vltk.records import GeneratorContents, SamplesContents, Stage

STAGE = Stage.COMPARE
REPORT = "report.html"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareConfig:
    title: str = "vltk: generators side by side"


def column(scores: Path) -> dict[str, Any]:
    """One scores artifact's column: its metrics and what made them (the generator's manifest, through the chain)."""
    manifest = artifacts.open_artifact(scores, Stage.SCORE)
    chain = artifacts.provenance(scores)
    samples, sampled = next(((p, m) for p, m in chain if m.get("stage") == Stage.SAMPLE), (None, None))
    made = next(((p, m) for p, m in chain if m.get("stage") == Stage.TRAIN_GEN), None)
    if samples is None or made is None:
        raise VltkError(f"{scores}: its samples or generator artifact is gone, so its column cannot be labelled")
    gen = GeneratorContents.from_manifest(made[1], made[0])
    metrics = json.loads((scores / "metrics.json").read_text())
    trained = gen.extra.get("train")  # absent for released weights (vltk import magvlt): trained elsewhere
    train = {"steps": trained["steps"], "seconds": trained["seconds"]} if trained else {}
    train["parameters"] = gen.extra["parameters"]
    label = f"{metrics['task']}: {gen.generator} {gen.model['size']}, "
    label += f"{train['steps']} steps" if trained else "released weights"
    if gen.generator.startswith("givt"):  # GIVT's sampler settings tell its columns apart (a sweep)
        knobs = sampled["config"]["givt"]
        label += f", t = {knobs['temperature']}, w = {knobs['cfg_weight']}"
        if (acceptance := SamplesContents.from_manifest(sampled, samples).acceptance) is not None:
            metrics = {**metrics, "dbcfg_acceptance": acceptance}
    elif "guidance" in sampled["config"].get(gen.generator, {}):  # MAGVLT / ARGVLT classifier-free guidance
        knobs = sampled["config"][gen.generator]
        label += f", w = {knobs['guidance']}" + (" ramped" if knobs["guidance_schedule"] != "constant" else "")
    candidates = sampled["config"].get("candidates", 1)
    if candidates > 1:
        label += f", best of {candidates} by {sampled['config']['rerank']}"
    return {"label": label, "scores": str(scores), "samples": str(samples), "task": metrics["task"],
            "generator": gen.generator, "train": train, "metrics": metrics,
            "summary": manifest["contents"].get("summary", "")}


def render(cfg: CompareConfig, columns: list[dict[str, Any]]) -> str:
    """The report's HTML: the headline numbers, a row per artifact; one table of every metric with a column per
    artifact; then each task's grids side by side."""
    rows: dict[str, dict[int, Any]] = {}
    for i, col in enumerate(columns):
        for key, val in flat({"train": col["train"], **col["metrics"]}):
            rows.setdefault(key, {})[i] = val
    header = ("metric", *(col["label"] for col in columns))
    body = [(html.escape(key), *(value(cells[i]) if i in cells else "" for i in range(len(columns))))
            for key, cells in rows.items()]
    parts = [headline_table([(col["label"], headline(col["metrics"])) for col in columns]),
             "<h2>Metrics</h2>", table(body, header)]
    for task in dict.fromkeys(col["task"] for col in columns):
        shown = [col for col in columns if col["task"] == task]
        grids = tuple(image_tag(Path(col["samples"]) / "grid.png", css="px") for col in shown)
        parts += [f"<h2>{html.escape(task)} samples</h2>", table([grids], tuple(col["label"] for col in shown))]
    return page(cfg.title, parts)


def run(cfg: CompareConfig, scores: list[Path], out: Path, *, force: bool = False) -> Path:
    scores, out = [Path(s) for s in scores], Path(out)
    if not scores:
        raise VltkError("give at least one scores artifact to compare")
    columns = [column(s) for s in scores]
    job = artifacts.begin(out, stage=STAGE, config=cfg, inputs={f"scores{i}": s for i, s in enumerate(scores)},
                          force=force)
    if job is None:
        return out
    artifacts.write_json_atomic(job.work / "comparison.json", columns)
    artifacts.write_text_atomic(job.work / REPORT, render(cfg, columns))
    return job.publish({"columns": [col["label"] for col in columns], "report": REPORT,
                        "summary": "; ".join(col["summary"] for col in columns)})
