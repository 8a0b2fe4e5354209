"""The CLI as a user meets it: help for every command, `vltk info`, and one-line errors instead of tracebacks."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vltk import artifacts
from vltk.cli import app

runner = CliRunner()
COMMANDS = [["synth", "shapes"], ["shard"], ["tokenize", "text"], ["import", "magvlt"], ["info"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_explains_itself(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


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
