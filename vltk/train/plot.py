"""The loss-curve PNG a training run publishes: losses on the left, accuracies on the right, both against the step.

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    plot_metrics(lines, run / "loss.png", title="magvlt tiny")

Every key of the metrics lines is a series except the bookkeeping ones (step, learning rates, gradient norms, timing):
keys ending in `_acc` go to the accuracy panel (y in [0, 1]), the rest to the loss panel, where the total "loss" is
drawn thicker. A key missing from a line (a task drawn in some steps only) is skipped for that series, not drawn as 0.
The image is 1200 x 450 pixels. Drawing uses matplotlib's Agg canvas directly, so importing this module changes no
global matplotlib state (no pyplot, no backend switch).
"""

from __future__ import annotations

import os
from pathlib import Path

FIGSIZE, DPI = (12.0, 4.5), 100  # 1200 x 450 px
BOOKKEEPING = ("step", "seconds", "tokens_per_s", "lr", "grad_norm")  # a key, or a prefix before "/"
Series = dict[str, tuple[list[float], list[float]]]  # name -> (steps, values)


def split_series(lines: list[dict[str, float]]) -> tuple[Series, Series]:
    """(losses, accuracies) of the metrics lines, each series with the steps where it has a value, in line order."""
    losses: Series = {}
    accuracies: Series = {}
    for line in lines:
        for key, value in line.items():
            if key.split("/")[0] in BOOKKEEPING or value is None:
                continue
            steps, values = (accuracies if key.endswith("_acc") else losses).setdefault(key, ([], []))
            steps.append(line["step"])
            values.append(float(value))
    return losses, accuracies


def _draw(axes, series: Series, ylabel: str) -> None:
    # "loss" first, so the total leads the legend; the terms follow in name order.
    for name in sorted(series, key=lambda k: (k != "loss", k)):
        steps, values = series[name]
        # A series logged once would be an invisible line of one point: mark it.
        axes.plot(steps, values, label=name, linewidth=2.5 if name == "loss" else 1.2,
                  marker="o" if len(steps) == 1 else None)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if series:
        axes.legend(fontsize="small")


def plot_metrics(lines: list[dict[str, float]], file: Path, title: str = "") -> None:
    """Draw the metrics lines (dicts with "step" and any series) to the PNG `file`, written atomically."""
    if not lines:
        raise ValueError("no metrics lines to plot (the run logged nothing yet)")
    missing = [i for i, line in enumerate(lines) if "step" not in line]
    if missing:
        raise ValueError(f"metrics lines {missing[:5]} have no 'step'")
    losses, accuracies = split_series(lines)
    # matplotlib takes ~0.4 s to import: paid by the run that draws, at its end, not by every process that loads vltk.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)  # attaches itself to the figure: savefig then renders with Agg
    left, right = figure.subplots(1, 2)
    _draw(left, losses, "loss")
    _draw(right, accuracies, "accuracy")
    right.set_ylim(0.0, 1.0)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    file = Path(file)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
