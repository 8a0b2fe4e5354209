"""The CLI as a user meets it: help for every command, every option and argument documented, `vltk info`, and
one-line errors instead of tracebacks."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer
from typer.testing import CliRunner

from vltk import artifacts
from vltk.cli import app

runner = CliRunner()


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(names after `vltk`, command) for the app and every group and command under it, found in the app itself, so a
    new command is checked without a word here. Typer's groups (its own copy of click) hold theirs in .commands."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


COMMANDS = dict(walk(typer.main.get_command(app)))
# (command, option) pairs that have no help text yet; vltk/cli.py is edited elsewhere: a pair leaves this set (and the
# test asks for that) when its option gets a help text, and no other pair may join it.
UNDOCUMENTED = {("vltk", "--version")}


def flag(param: Any) -> str:
    """How `--help` shows a parameter: an option by its longest flag, an argument by its name."""
    return max(param.opts, key=len) if param.param_type_name == "option" else param.name


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(("vltk", *path)))
def test_every_command_explains_itself(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = COMMANDS[path]
    for param in command.params:  # every option and argument is listed (none hidden) ...
        assert flag(param) in result.output, flag(param)
    for name in getattr(command, "commands", {}):  # ... and every sub-command of a group
        assert name in result.output, name


def test_every_option_and_argument_has_a_help_text():
    undocumented = {(" ".join(("vltk", *path)), flag(param)) for path, command in COMMANDS.items()
                    for param in command.params if not (getattr(param, "help", None) or "").strip()}
    assert undocumented == UNDOCUMENTED, "give each new option a help text; drop a documented one from UNDOCUMENTED"


def test_the_walk_finds_every_command():
    assert {" ".join(path) for path in COMMANDS} >= {"", "shard", "encode", "train-gen", "sample", "score", "plan",
                                                     "compare", "decode", "info", "synth", "synth shapes", "tokenize",
                                                     "tokenize text", "tokenize image"}
    assert sum(len(command.params) for command in COMMANDS.values()) > 100  # the options were found too


def test_top_level_help_lists_the_stages():
    result = runner.invoke(app, ["--help"])
    for name in ("synth", "shard", "tokenize", "import", "info"):
        assert name in result.output


def _toy_artifact(out):
    job = artifacts.begin(out, stage="toy", config={"n": 1}, inputs={})
    job.publish({"summary": "a toy", "splits": {"train": {"samples": 3}}})


def test_info_prints_the_manifest(tmp_path):
    _toy_artifact(tmp_path / "toy")
    result = runner.invoke(app, ["info", str(tmp_path / "toy")])
    assert result.exit_code == 0
    assert "splits.train.samples" in result.output and "toy" in result.output
    raw = runner.invoke(app, ["info", "--json", str(tmp_path / "toy")])
    assert json.loads(raw.stdout)["contents"]["splits"]["train"]["samples"] == 3


def test_config_typo_is_one_line_with_a_suggestion(tmp_path):
    result = runner.invoke(app, ["shard", str(tmp_path), str(tmp_path / "out"), "--set", "sise=64"])
    assert result.exit_code == 2
    assert "unknown config key 'sise' (did you mean 'size'?)" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_errors_in_a_real_process_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vltk", "info", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: no such artifact: {tmp_path / 'missing'}"]


# Imported only where used, since each costs every `vltk` process its import time (torchvision ~1.5 s, as much as
# torch itself; matplotlib ~0.4 s): the grid and blur helpers, the loss plot, the metrics' backbones and the trackers.
# `vltk plan` counts torchvision's VGG and Inception, so it is the one stage that imports torchvision up front.
LAZY = ("torchvision", "matplotlib", "lpips", "torch_fidelity", "open_clip", "torchmetrics", "timm", "tensorboard")


def test_a_stage_process_starts_without_the_libraries_it_uses_late():
    import vltk.pipeline

    stages = [p.stem for p in Path(vltk.pipeline.__file__).parent.glob("*.py") if p.stem not in ("__init__", "plan")]
    check = (f"import sys\nfor stage in {stages!r}: __import__('vltk.pipeline.' + stage)\n"
             f"print([name for name in {LAZY!r} if name in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(stages) > 10 and proc.stdout.strip() == "[]"
