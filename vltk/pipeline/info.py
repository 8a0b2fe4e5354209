"""`vltk info`: an artifact's manifest, as a table for people or as JSON for scripts.

    vltk info build/demo/gen              # stage, provenance, inputs, contents and the resolved config
    vltk info build/demo/gen --json       # the manifest as it is on disk

Reads only: nothing is written, and an unfinished or foreign folder is one line saying why it is not an artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

from vltk.artifacts import read_manifest
from vltk.ui import console, manifest_table


def run(path: Path, as_json: bool = False) -> None:
    manifest = read_manifest(Path(path))
    if as_json:
        print(json.dumps(manifest, indent=2))
    else:
        console().print(manifest_table(path, manifest))
