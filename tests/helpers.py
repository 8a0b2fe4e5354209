"""What the tests share besides artifacts (tests/factories.py) and fixtures (tests/conftest.py): the CLI run in this
process, `--set` lists, the tiny generator's overrides, one-line errors, make in the repository, and the skip of tests
that need Java."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from vltk.cli import app

ROOT = Path(__file__).parents[1]  # the repository
BIN = Path(sys.executable).parent  # the venv running the tests; its vltk is the one under test

# pycocoevalcap's PTB tokenizer (every caption metric: `vltk score` of captions) and METEOR run Java.
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java (`java` on PATH) for the caption "
                                "metrics' PTB tokenizer and METEOR, e.g. Debian's openjdk-17-jre-headless")

# A generator small enough to train in a second on the CPU (MAGVLT or ARGVLT, on the tiny encoded data set).
TINY_GEN = ["model.width=16", "model.depth=1", "model.heads=2", "train.steps=2", "train.batch_size=4",
            "train.log_every=1", "data.bpe_dropout=0.0"]
# A GIVT as small (causal or MaskGIT, on the tiny VAE-encoded data set), trained 2 steps.
TINY_GIVT = ["model.width=16", "model.depth=1", "model.heads=2", "model.mlp_width=32", "model.gmm.mixtures=2",
             "train.steps=2", "train.batch_size=4", "optim.warmup_steps=1"]


# UViM at the same scale: a label autoencoder with 4 tokens of 4-d (or 8 codes), and a one-block GIVT that cross-attends
# to a one-block ViT of 8 px patches (`vltk tokenize label`, then `vltk train-gen --model givt-uvim`).
TINY_LABEL_TOK = ["model.patch_size=4", "model.width=16", "model.enc_depth=1", "model.dec_depth=1", "model.heads=2",
                  "model.mlp_width=32", "model.code_len=4", "model.codeword_dim=4", "model.max_instances=4",
                  "model.codebook_size=8", "train.steps=2", "train.batch_size=4", "eval_count=2",
                  "eval_batch_size=2", "recon_images=2"]
TINY_UVIM = ["model.width=16", "model.depth=1", "model.heads=2", "model.mlp_width=32", "model.encoder.patch_size=8",
             "model.encoder.width=8", "model.encoder.depth=1", "model.encoder.heads=2", "train.steps=2",
             "train.batch_size=4", "train.log_every=1", "optim.warmup_steps=1"]


def invoke(*args: object) -> Result:
    """`vltk ARGS` in this process (every argument str()-ed), whatever its exit code."""
    return CliRunner().invoke(app, [str(a) for a in args])


def run_cli(*args: object, code: int = 0) -> str:
    """`vltk ARGS` in this process; asserts its exit code (0 unless told) and returns what it printed."""
    result = invoke(*args)
    assert result.exit_code == code, result.output
    return result.output


def sets(*pairs: str) -> list[str]:
    """`--set` before each key=value: sets("a=1", "b=2") == ["--set", "a=1", "--set", "b=2"]."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def one_line_error(result: Result, *words: str) -> str:
    """Exit code 2, one error line (after any progress the stage showed) that says `words`, no traceback; the line."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and "Traceback" not in result.output, result.output
    assert all(word in errors[0] for word in words), errors[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return errors[0]


def make(*args: str, **variables: str) -> subprocess.CompletedProcess:
    """make in the repo with this venv, never reinstalling it (-o: the install stamp counts as up to date)."""
    venv = BIN.parent
    command = ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", "-o", f"{venv}/.installed", *args,
               *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, capture_output=True, text=True)
