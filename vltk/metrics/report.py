"""A self-contained HTML report of a scores artifact: metrics, samples, upstream pictures and the provenance chain.

    write_report(out / "report.html", metrics, samples_dir, rows, provenance(samples_dir))

Everything is inlined (PNGs as data URIs), so the file can be mailed or opened from anywhere. Sections: the metric
tables; the samples (T2I: each image under its prompt; captioning: each image beside its generated and reference
captions); the reconstruction grid of the image tokenizer and the loss curves of the generator, found through the
manifests; and the chain of artifacts that made the samples (stage, path, summary, date, git sha).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from vltk.artifacts import write_text_atomic

SHOWN = 48  # samples shown one by one (the grid holds them all)
PICTURES = {"tokenize-image": ("recon.png", "image tokenizer: val originals (top) and reconstructions"),
            "train-gen": ("loss.png", "generator training curves")}
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}img.px{image-rendering:pixelated}
.samples td{font-size:90%}h2{margin-top:1.6em}"""


def image_tag(file: Path, width: int | None = None, css: str = "") -> str:
    """An <img> holding the PNG `file` inline (a data URI)."""
    data = base64.b64encode(file.read_bytes()).decode()
    size = f' width="{width}"' if width else ""
    return f'<img class="{css}" src="data:image/png;base64,{data}"{size}>'


def flat(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as (dotted key, value) rows, in order."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += flat(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    """An HTML table of already-escaped cells under an escaped header."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def value(x: Any) -> str:
    """A metric's value as escaped text (floats to 4 decimals)."""
    return html.escape(f"{x:.4f}" if isinstance(x, float) else str(x))


def _samples(samples_dir: Path, rows: list[dict[str, Any]]) -> str:
    shown = []
    for row in rows[:SHOWN]:
        picture = image_tag(samples_dir / row["file"], 96, "px")
        if row.get("first_file"):  # re-ranked: candidate 0 beside the kept one
            picture += " " + image_tag(samples_dir / row["first_file"], 96, "px")
        texts = [f"<b>prompt</b> {html.escape(row['prompt'])}" if row.get("prompt") else "",
                 f"<b>generated</b> {html.escape(row['caption'])}" if row.get("caption") is not None else "",
                 f"<b>reference</b> {html.escape(row['references'][0])}"
                 if row.get("references") and row.get("caption") is not None else "",
                 f"<b>candidate 0</b> {html.escape(row['first_caption'])}" if row.get("first_caption") else "",
                 f"<b>best of {row['candidates']} by {row['rerank']}</b> (right: candidate 0)"
                 if row.get("first_file") else ""]
        shown.append((row["index"], picture, "<br>".join(t for t in texts if t)))
    return f'<div class="samples">{table(shown, ("#", "image", "text"))}</div>'


def page(title: str, parts: list[str]) -> str:
    """A whole self-contained HTML page: the title as heading, then the parts."""
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    return "\n".join([head, f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>", *parts,
                      "</body></html>"])


def write_report(file: Path, metrics: dict[str, Any], samples_dir: Path, rows: list[dict[str, Any]],
                 chain: list[tuple[Path, dict[str, Any]]]) -> None:
    """Write the report to `file` (atomically)."""
    title = f"{metrics['task']} samples of {metrics['generator']}"
    parts = ["<h2>Metrics</h2>", table([(html.escape(k), value(v)) for k, v in flat(metrics)], ("metric", "value")),
             "<h2>Samples</h2>", image_tag(samples_dir / "grid.png", css="px"), _samples(samples_dir, rows)]
    for path, manifest in chain:
        if manifest.get("stage") in PICTURES and (path / PICTURES[manifest["stage"]][0]).is_file():
            name, caption = PICTURES[manifest["stage"]]
            parts += [f"<h2>{html.escape(caption)}</h2>", image_tag(path / name, css="px")]
    provenance = [(html.escape(m.get("stage", "")), html.escape(str(p)), html.escape(m.get("contents", {})
                   .get("summary", "")), html.escape(m.get("created", "")), html.escape(str(m.get("git_sha", ""))))
                  for p, m in chain]
    parts += ["<h2>Provenance</h2>", table(provenance, ("stage", "artifact", "summary", "created", "git"))]
    write_text_atomic(file, page(title, parts))
