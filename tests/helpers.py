"""What the tests share besides artifacts (tests/factories.py) and fixtures (tests/conftest.py): make in the
repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]  # the repository
BIN = Path(sys.executable).parent  # the venv running the tests; its vltk is the one under test


def make(*args: str, **variables: str) -> subprocess.CompletedProcess:
    """make in the repo with this venv, never reinstalling it (-o: the install stamp counts as up to date)."""
    venv = BIN.parent
    command = ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", "-o", f"{venv}/.installed", *args,
               *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, capture_output=True, text=True)
