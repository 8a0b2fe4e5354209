"""A self-contained HTML report of a scores artifact, read from the top: what scored how, then why.

    write_report(out / "report.html", metrics, samples_dir, rows, provenance(samples_dir), readings)

Everything is inlined (PNGs as data URIs, the chart as SVG, no script), so the file can be mailed or opened from
anywhere. Sections, in order:
- the headline (`headline`): the judge's whole-caption accuracy over all / seen / held-out prompts, with and without
  re-ranking; CIDEr and BLEU-4 of generated captions; FID, IS and CLIP score, or the word a metric gives instead of a
  number ("unavailable", its reason beneath);
- the judge's accuracy per attribute as a bar chart, a bar per prompt group (`chart`);
- the samples: T2I each image under its prompt, captioning each image beside its generated and reference captions,
  and beside each the judge's verdict per attribute and what it read in the image (`readings`, one per row);
- the sample grid, the full metric table, the reconstruction grid of the image tokenizer and the loss curves of the
  generator (found through the manifests), and the chain of artifacts that made the samples (stage, path, summary,
  date, git sha).
`headline_table` puts several headlines in one table, a row each (`vltk compare`).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, NamedTuple

from vltk.artifacts import write_text_atomic
from vltk.metrics.judge import Detection, Verdict, describe
from vltk.records import Stage

SHOWN = 48  # samples shown one by one (the grid holds them all)
PICTURES = {Stage.TOKENIZE_IMAGE: ("recon.png", "image tokenizer: val originals (top) and reconstructions"),
            Stage.TRAIN_GEN: ("loss.png", "generator training curves")}
# The judge's accuracies charted, as metrics.json names them, and the prompt groups it reports them for.
ATTRIBUTES = {"whole": "whole caption", "count": "count", "shape": "shape", "color": "colour", "size": "size",
              "position": "position"}
GROUPS = {"all": "all", "seen": "seen", "heldout": "held-out"}
GROUP_COLOURS = {"all": "#3465a4", "seen": "#4e9a06", "heldout": "#c4760a"}
BAR = 400  # px of a 100 % bar
BAR_HEIGHT, BAR_GAP, BLOCK_GAP = 16, 3, 10  # px: a bar, between a block's bars, between attribute blocks
LABELS = 170  # px left of the bars: the attribute, then the group
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}img.px{image-rendering:pixelated}
.samples td{font-size:90%}h2{margin-top:1.6em}
.headline{margin:1em 0 2em}.line{display:flex;flex-wrap:wrap;align-items:baseline;gap:0 2.2em;margin:.4em 0}
.what{flex:0 0 15em;font-weight:600;color:#444}.fig{width:10em}
.num{font-size:2.4em;font-weight:700;line-height:1.1}.num.na{color:#999;font-size:1.5em;font-weight:600}
.lab{font-size:1.05em}.note{font-size:.8em;color:#666}
.mark{display:inline-block;margin:0 .3em .2em 0;padding:0 .35em;border-radius:3px;white-space:nowrap}
.ok{background:#e3f4d7;color:#2a6b00}.bad{background:#fbe0dc;color:#a11f0c}.read{color:#444}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
table.heads td{font-size:1.3em;font-weight:600}table.heads td.na{font-size:1em;color:#999}
table.heads tr>th:first-child{white-space:nowrap}
.pair{display:flex;gap:6px}figure{margin:0;text-align:center;font-size:85%;color:#555}"""


class Figure(NamedTuple):
    """One number of the headline: its label, the value as shown, a note under it (a count, a reason), and whether the
    value is a number (else a word such as "unavailable", shown greyed and smaller so that the numbers stand out)."""

    label: str
    value: str
    note: str = ""
    number: bool = True


Line = tuple[str, list[Figure]]  # a headline line: its title and its figures
Reading = tuple[Verdict, list[Detection]]  # the judge on one sample: its verdict and the objects it read in the image


def image_tag(file: Path, width: int | None = None, css: str = "") -> str:
    """An <img> holding the PNG `file` inline (a data URI)."""
    data = base64.b64encode(file.read_bytes()).decode()
    size = f' width="{width}"' if width else ""
    return f'<img class="{css}" src="data:image/png;base64,{data}"{size} alt="{html.escape(file.name)}">'


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


def percent(x: float) -> str:
    return f"{x:.1%}"


def measure(label: str, x: Any, digits: int, note: str = "") -> Figure:
    """A number to `digits` decimals, or the word a metric holds instead ("unavailable: why": the word, `why` the
    note), so that a missing metric never shows as a number."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Figure(label, f"{x:.{digits}f}", note)
    word, _, why = str(x).partition(": ")
    return Figure(label, word, why, number=False)


def judged(groups: dict[str, Any] | None) -> bool:
    """Did the judge read any caption? Not outside the shapes data, where its zeros would mislead."""
    return bool(groups and groups["all"].get("parsed"))


def _judge_figures(groups: dict[str, Any]) -> list[Figure]:
    figures = [Figure(label, percent(groups[name]["whole"]), f"{groups[name]['captions']} captions")
               for name, label in GROUPS.items() if groups.get(name, {}).get("captions")]
    if groups["all"]["parsed"] < 1:  # generated captions outside the grammar count as wrong: say how many
        figures.append(Figure("parsed", percent(groups["all"]["parsed"]), "captions in the shapes grammar"))
    return figures


def _part(images: dict[str, Any] | str, name: str) -> Any:
    """One metric of metrics' "images", or the reason that "images" holds instead of them all (no weights given)."""
    return images[name] if isinstance(images, dict) else images


def _images_figures(metrics: dict[str, Any]) -> list[Figure]:
    figures = [measure(label, _part(metrics[key], "FID"), 2)
               for key, label in (("images", "FID"), ("images_first", "FID without re-ranking")) if key in metrics]
    if "images" in metrics:
        inception = _part(metrics["images"], "IS")  # its mean and std, or why it is missing
        figures.append(measure("IS", inception["mean"], 2, f"± {inception['std']:.2f}")
                       if isinstance(inception, dict) else measure("IS", inception, 2))
    return figures


def _clip_figures(clip: dict[str, Any] | str) -> list[Figure]:
    if not isinstance(clip, dict):
        return [measure("cosine", clip, 4)]
    return [measure(name.replace("_", " "), pair["cosine"], 4, f"CLIPScore {pair['clipscore']:.2f}, n = {pair['n']}")
            for name, pair in clip.items() if isinstance(pair, dict)]


def headline(metrics: dict[str, Any]) -> list[Line]:
    """The numbers a reader looks for first, as lines of figures: caption metrics, the judge's whole-caption accuracy
    per prompt group, FID / IS, CLIP score; each "without re-ranking" too where the samples were re-ranked."""
    lines: list[Line] = []
    for key, title in (("captions", "Captions vs references"), ("captions_first", "Captions, without re-ranking")):
        if isinstance(metrics.get(key), dict):
            lines.append((title, [measure(name, metrics[key][name], 3) for name in ("CIDEr", "BLEU-4")]))
    for key, title in (("judge", "Judge: whole caption right"), ("judge_first", "Judge, without re-ranking")):
        if judged(metrics.get(key)):
            lines.append((title, _judge_figures(metrics[key])))
    if images := _images_figures(metrics):
        lines.append(("Images", images))
    if "CLIP score" in metrics:
        lines.append(("CLIP score", _clip_figures(metrics["CLIP score"])))
    return lines


def headline_html(lines: list[Line]) -> str:
    """The headline in large type, a row per line."""
    rows = []
    for title, figures in lines:
        cells = "".join(f'<div class="fig"><div class="num{"" if f.number else " na"}">{html.escape(f.value)}</div>'
                        f'<div class="lab">{html.escape(f.label)}</div><div class="note">{html.escape(f.note)}</div>'
                        "</div>" for f in figures)
        rows.append(f'<div class="line"><div class="what">{html.escape(title)}</div>{cells}</div>')
    return f'<section class="headline">{"".join(rows)}</section>'


def _cell(figure: Figure | None) -> str:
    if figure is None:
        return "<td></td>"
    css = "" if figure.number else ' class="na"'
    return f'<td{css} title="{html.escape(figure.note)}">{html.escape(figure.value)}</td>'


def headline_table(headlines: list[tuple[str, list[Line]]]) -> str:
    """Several labelled headlines as one table, a row each: a column per figure under its line's title, blank where a
    row lacks it; notes show on hover. A figure no row has a number for (FID without Inception weights, ...) gets no
    column, only a line under the table: a sweep's table then fits the page."""
    every = [((title, f.label), f) for _, lines in headlines for title, figures in lines for f in figures]
    numbered = {key for key, f in every if f.number}
    columns: dict[str, dict[str, None]] = {}  # line title -> figure labels, in order of first appearance
    for title, label in dict.fromkeys(key for key, _ in every):
        if (title, label) in numbered:
            columns.setdefault(title, {})[label] = None
    absent = dict.fromkeys(f"{title} {label}" for (title, label), _ in every if (title, label) not in numbered)
    top = "".join(f'<th colspan="{len(labels)}">{html.escape(title)}</th>' for title, labels in columns.items())
    sub = "".join(f"<th>{html.escape(label)}</th>" for labels in columns.values() for label in labels)
    body = []
    for name, lines in headlines:
        found = {(title, f.label): f for title, figures in lines for f in figures}
        cells = [found.get((title, label)) for title, labels in columns.items() for label in labels]
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(_cell(f) for f in cells)}</tr>")
    note = f'<p class="note">Unavailable in every row: {html.escape(", ".join(absent))}.</p>' if absent else ""
    return f'<table class="heads"><tr><th rowspan="2"></th>{top}</tr><tr>{sub}</tr>{"".join(body)}</table>{note}'


def chart(groups: dict[str, Any]) -> str:
    """The judge's accuracy per attribute (`groups`: metrics' "judge") as an SVG of horizontal bars: a block per
    attribute, in it a bar per prompt group, each labelled with its percentage."""
    shown = [name for name in GROUPS if groups.get(name, {}).get("captions")]
    block = len(shown) * (BAR_HEIGHT + BAR_GAP) + BLOCK_GAP
    parts = []
    for a, (attribute, label) in enumerate(ATTRIBUTES.items()):
        top = a * block
        parts.append(f'<text x="0" y="{top + BAR_HEIGHT - 3}" font-weight="600">{html.escape(label)}</text>')
        for g, name in enumerate(shown):
            y, share = top + g * (BAR_HEIGHT + BAR_GAP), groups[name][attribute]
            width = share * BAR
            parts += [f'<text x="{LABELS - 8}" y="{y + BAR_HEIGHT - 3}" text-anchor="end" fill="#555">'
                      f"{html.escape(GROUPS[name])}</text>",
                      f'<rect x="{LABELS}" y="{y}" width="{BAR}" height="{BAR_HEIGHT}" fill="#eee"/>',
                      f'<rect class="bar" data-group="{name}" data-attribute="{attribute}" x="{LABELS}" y="{y}" '
                      f'width="{width:.1f}" height="{BAR_HEIGHT}" fill="{GROUP_COLOURS[name]}"/>',
                      f'<text x="{LABELS + width + 5:.1f}" y="{y + BAR_HEIGHT - 3}">{percent(share)}</text>']
    size = f'width="{LABELS + BAR + 60}" height="{len(ATTRIBUTES) * block}"'
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" {size} font-size="13" role="img" '
            f'aria-label="the judge\'s accuracy per attribute and prompt group">{"".join(parts)}</svg>')


def _mark(right: bool, name: str, detail: str = "") -> str:
    # The tick or cross and the colour say it at a glance; the word says it to screen readers and in print.
    css, sign, word = ("ok", "✓", "right") if right else ("bad", "✗", "wrong")
    return (f'<span class="mark {css}"><span aria-hidden="true">{sign}</span> {html.escape(name)}'
            f'<span class="sr"> {word}</span>{html.escape(detail)}</span>')


def verdict_html(reading: Reading) -> str:
    """The judge's verdict on one sample, a mark per attribute, and what it read in the image."""
    verdict, found = reading
    read = f'<div class="read">read: {html.escape(describe(found))}</div>'
    if not verdict.parsed:
        return _mark(False, "not judged", ": the caption is outside the shapes grammar") + read
    n = verdict.mentioned
    marks = [_mark(verdict.correct, "whole caption"),
             _mark(verdict.count, "count", "" if verdict.count else f" (says {n}, read {verdict.found})")]
    for attribute in ("shape", "color", "size"):
        share = getattr(verdict, attribute)
        marks.append(_mark(share == 1, ATTRIBUTES[attribute], "" if share == 1 else f" ({round(share * n)} of {n})"))
    marks.append(_mark(verdict.position == 1, "position"))
    return " ".join(marks) + read


def _samples(samples_dir: Path, rows: list[dict[str, Any]], readings: list[Reading] | None) -> str:
    shown = []
    for i, row in enumerate(rows[:SHOWN]):
        picture = image_tag(samples_dir / row["file"], 96, "px")
        if row.get("first_file"):  # re-ranked: candidate 0 beside the kept one
            picture = (f'<div class="pair"><figure>{picture}<figcaption>kept</figcaption></figure><figure>'
                       f'{image_tag(samples_dir / row["first_file"], 96, "px")}<figcaption>candidate 0</figcaption>'
                       "</figure></div>")
        texts = [f"<b>prompt</b> {html.escape(row['prompt'])}" if row.get("prompt") else "",
                 f"<b>generated</b> {html.escape(row['caption'])}" if row.get("caption") is not None else "",
                 f"<b>reference</b> {html.escape(row['references'][0])}"
                 if row.get("references") and row.get("caption") is not None else "",
                 f"<b>candidate 0</b> {html.escape(row['first_caption'])}" if row.get("first_caption") else "",
                 f"<b>kept</b> the best of {row['candidates']} by {html.escape(str(row['rerank']))}"
                 if row.get("first_file") else ""]
        cells = (row["index"], picture, "<br>".join(t for t in texts if t))
        shown.append((*cells, verdict_html(readings[i])) if readings else cells)
    header = ("#", "image", "text", *(("the judge",) if readings else ()))
    return f'<div class="samples">{table(shown, header)}</div>'


def page(title: str, parts: list[str]) -> str:
    """A whole self-contained HTML page: the title as heading, then the parts."""
    head = f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    return "\n".join([head, f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>", *parts,
                      "</body></html>"])


def write_report(file: Path, metrics: dict[str, Any], samples_dir: Path, rows: list[dict[str, Any]],
                 chain: list[tuple[Path, dict[str, Any]]], readings: list[Reading] | None = None) -> None:
    """Write the report to `file` (atomically). `readings`: the judge on each of `rows` (their verdicts are shown
    where the judge read any caption)."""
    title = f"{metrics['task']} samples of {metrics['generator']}"
    parts = [headline_html(headline(metrics))]
    judge = metrics.get("judge")
    verdicts = readings if judged(judge) else None  # outside the shapes data the judge's verdicts say nothing
    if judged(judge):
        parts += ["<h2>The judge per attribute</h2>", chart(judge)]
    parts += ["<h2>Samples</h2>"]
    if verdicts:
        parts.append("<p>Beside each sample: the judge's verdict per attribute (on the kept sample where re-ranked) "
                     "and what it read in the image (blob: no shape fits; unknown-colour: far from every named "
                     "colour).</p>")
    parts += [_samples(samples_dir, rows, verdicts), "<h2>All samples</h2>",
              image_tag(samples_dir / "grid.png", css="px"),
              "<h2>Metrics</h2>", table([(html.escape(k), value(v)) for k, v in flat(metrics)], ("metric", "value"))]
    for path, manifest in chain:
        if manifest.get("stage") in PICTURES and (path / PICTURES[manifest["stage"]][0]).is_file():
            name, caption = PICTURES[manifest["stage"]]
            parts += [f"<h2>{html.escape(caption)}</h2>", image_tag(path / name, css="px")]
    provenance = [(html.escape(m.get("stage", "")), html.escape(str(p)), html.escape(m.get("contents", {})
                   .get("summary", "")), html.escape(m.get("created", "")), html.escape(str(m.get("git_sha", ""))))
                  for p, m in chain]
    parts += ["<h2>Provenance</h2>", table(provenance, ("stage", "artifact", "summary", "created", "git"))]
    write_text_atomic(file, page(title, parts))
