"""Terminal output: rich progress bars with rates and ETA, and the one-line messages stages print."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.table import Table
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def console() -> Console:
    # Status goes to stderr so that stdout stays clean for what a command prints on purpose (`vltk info --json`).
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def progress(description: str, total: int | None, unit: str = "it") -> Iterator[Callable[..., None]]:
    """Yields `advance(n=1, **fields)`; the bar shows done/total, rate in `unit`/s, elapsed and ETA."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=console(), transient=False) as bar:
        task = bar.add_task(description, total=total, rate="", info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            fields = {"rate": f"{speed:,.1f} {unit}/s" if speed else ""}
            if info is not None:
                fields["info"] = info
            bar.update(task, **fields)

        yield advance


def _flatten(data: object, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict) and data:
        return [row for k, v in data.items() for row in _flatten(v, f"{prefix}{k}.")]
    text = str(data)
    return [(prefix.rstrip("."), text if len(text) < 200 else text[:197] + "...")]


def manifest_table(path: object, manifest: dict) -> Table:
    """An artifact's manifest as one table: identity first, then inputs, contents and the resolved config."""
    table = Table(title=f"{path}", show_header=True, header_style="bold", title_justify="left")
    table.add_column("section", style="cyan", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key in ("stage", "vltk_version", "git_sha", "created", "seconds"):
        if key in manifest:
            table.add_row("artifact", key, str(manifest[key]))
    for section in ("inputs", "contents", "config"):
        for i, (key, value) in enumerate(_flatten(manifest.get(section, {}))):
            table.add_row(section if i == 0 else "", key, value, end_section=False)
        table.add_section()
    return table
