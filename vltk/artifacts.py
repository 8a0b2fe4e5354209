"""The artifact contract: every stage writes one directory with a `manifest.json`, atomically.

    job = begin(out, stage="shard", config=cfg, inputs={"source": src}, force=False)
    if job is None:            # finished before with the same config and inputs: nothing to do
        return out
    ...write files under job.work...
    job.publish(contents={"train": {"samples": 900}})

A manifest holds the stage, the vltk version, the resolved config, the inputs (path + hash of their manifest, or a
fingerprint of a raw source), what the artifact contains, and timing. Work happens in `<out>.partial/`, renamed into
place only at the end, so a killed stage never leaves something a later stage could take for finished.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from vltk import __version__
from vltk.config import config_to_dict
from vltk.errors import VltkError
from vltk.ui import console

MANIFEST = "manifest.json"


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the finished artifact at `path`, or a one-line error saying why there is none."""
    path = Path(path)
    if not path.exists():
        raise VltkError(f"no such artifact: {path}")
    file = path / MANIFEST if path.is_dir() else path
    if not file.is_file():
        partial = path.with_name(path.name + ".partial")
        why = " (an unfinished run left it; re-run its stage)" if partial.exists() or path.is_dir() else ""
        raise VltkError(f"{path} is not a finished vltk artifact: no {MANIFEST}{why}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise VltkError(f"{file} is not valid JSON: {err}") from None


def open_artifact(path: Path, stage: str | tuple[str, ...]) -> dict[str, Any]:
    """Read the manifest at `path` and check that the artifact was made by `stage` (or one of several)."""
    manifest = read_manifest(path)
    wanted = (stage,) if isinstance(stage, str) else stage
    if manifest.get("stage") not in wanted:
        raise VltkError(
            f"{path} is a '{manifest.get('stage')}' artifact, but a {' or '.join(repr(s) for s in wanted)} "
            "artifact is needed here"
        )
    return manifest


def manifest_hash(path: Path) -> str:
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()[:16]


def source_fingerprint(path: Path) -> str:
    """A cheap identity for a raw (non-artifact) input: names, sizes and mtimes of every file under it."""
    path = Path(path)
    if not path.exists():
        raise VltkError(f"input not found: {path}")
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def describe_input(path: Path) -> dict[str, str]:
    """{path, hash} for an upstream artifact, {path, fingerprint} for a raw source."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return {"path": str(path), "hash": manifest_hash(path)}
    return {"path": str(path), "fingerprint": source_fingerprint(path)}


def write_text_atomic(file: Path, text: str) -> None:
    """Write `file` through a temporary file and a rename: a reader never sees half of it."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, file)


def write_json_atomic(file: Path, data: Any) -> None:
    write_text_atomic(file, json.dumps(data, indent=2, sort_keys=False) + "\n")


def make_manifest(identity: dict[str, Any], contents: dict[str, Any], started: float, **extra: Any) -> dict[str, Any]:
    """The full manifest of a run: its identity (stage, config, inputs), provenance, timing and contents."""
    return {
        **identity,
        "vltk_version": __version__,
        "git_sha": _git_sha(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 3),
        **extra,
        "contents": contents,
    }


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclasses.dataclass
class Job:
    """One stage run in progress: files go under `work`; `publish` makes them the artifact at `out`."""

    out: Path
    work: Path
    identity: dict[str, Any]
    started: float = dataclasses.field(default_factory=time.time)

    @property
    def resumed(self) -> bool:
        """Whether `work` holds what a killed run of this very config left (only with `begin(..., resume=True)`)."""
        return any(p.name != RUN_RECORD for p in self.work.iterdir())

    def publish(self, contents: dict[str, Any]) -> Path:
        (self.work / RUN_RECORD).unlink(missing_ok=True)
        write_json_atomic(self.work / MANIFEST, make_manifest(self.identity, contents, self.started))
        replace_dir(self.work, self.out)
        return self.out


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory `src` to `dst`, replacing what is there, with `dst` never missing a manifest half-way."""
    old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def identity(stage: str, config: Any, inputs: dict[str, Path]) -> dict[str, Any]:
    return {
        "stage": stage,
        "config": config_to_dict(config) if dataclasses.is_dataclass(config) else config,
        "inputs": {name: describe_input(p) for name, p in inputs.items()},
    }


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a finished artifact and the run asked for now ([] = the same run)."""
    diffs = []
    if old.get("stage") != new["stage"]:
        diffs.append(f"stage {old.get('stage')!r} != {new['stage']!r}")
    if old.get("config") != new["config"]:
        keys = sorted(set(old.get("config", {})) | set(new["config"]))
        diffs += [f"config.{k}" for k in keys if old.get("config", {}).get(k) != new["config"].get(k)]
    old_in = {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in old.get("inputs", {}).items()}
    new_in = {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in new["inputs"].items()}
    if old_in != new_in:
        diffs.append("inputs")
    return diffs


RUN_RECORD = ".run.json"  # identity of the run a .partial/ directory belongs to (what `resume` checks)


def begin(
    out: Path, *, stage: str, config: Any, inputs: dict[str, Path], force: bool = False, resume: bool = False
) -> Job | None:
    """Start a stage run writing `out`; None when `out` already holds this very run (same config and inputs).

    With `resume`, a `<out>.partial/` left by a killed run of the same config and inputs is kept (its checkpoints or
    finished pieces let the stage continue); anything else there is cleared.
    """
    out = Path(out)
    ident = identity(stage, config, inputs)
    if up_to_date(out, ident, force):
        return None
    if out.exists() and not (out / MANIFEST).is_file() and not force:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            raise VltkError(f"{out} exists and is not a vltk artifact; choose another path or pass --force")
    work = out.with_name(out.name + ".partial")
    record = work / RUN_RECORD
    if not (resume and record.is_file() and not differences(json.loads(record.read_text()), ident)):
        shutil.rmtree(work, ignore_errors=True)  # what a killed (or different) run left behind
        work.mkdir(parents=True)
        write_json_atomic(record, ident)
    return Job(out=out, work=work, identity=ident)


def up_to_date(out: Path, ident: dict[str, Any], force: bool) -> bool:
    """True when `out` already holds this very run; an error when it holds a different one and `force` is off."""
    if force or not (out / MANIFEST).is_file():
        return False
    diffs = differences(json.loads((out / MANIFEST).read_text()), ident)
    if diffs:
        raise VltkError(f"{out} was made by a different run (differs in: {', '.join(diffs)}); pass --force to rebuild it")
    console().print(f"[dim]{out} is up to date (same config and inputs); --force rebuilds it[/]")
    return True


def provenance(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The artifact at `path` and every upstream artifact its manifests name, breadth first, each once:
    [(path, manifest), ...]. Inputs that are raw sources, or artifacts no longer on disk, end the walk there."""
    chain, seen, queue = [], set(), [Path(path)]
    while queue:
        current = queue.pop(0)
        if current.resolve() in seen or not (current / MANIFEST).is_file():
            continue
        seen.add(current.resolve())
        manifest = read_manifest(current)
        chain.append((current, manifest))
        queue += [Path(entry["path"]) for entry in manifest.get("inputs", {}).values() if "hash" in entry]
    return chain

