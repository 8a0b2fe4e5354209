"""`python -m vltk` (what `accelerate launch -m vltk` runs)."""

from vltk.cli import app

app()
