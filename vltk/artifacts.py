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
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from vltk import __version__
from vltk.config import config_to_dict
from vltk.errors import VltkError
from vltk.ui import console

MANIFEST = "manifest.json"
# The manifest's layout. 2: input paths are relative to the artifact (with the absolute path beside them);
# 1 (no "schema" key): input paths as typed on the command line. Readers take both (`input_path`).
SCHEMA = 2


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
        manifest = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise VltkError(f"{file} is not a vltk manifest: it is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise VltkError(f"{file} is not valid JSON: {err}") from None
    if problem := _malformed(manifest):
        raise VltkError(f"{file} is not a vltk manifest: {problem}")
    return manifest


def _malformed(manifest: Any) -> str | None:
    """What is wrong with the shape of a parsed manifest (None: nothing), so that readers may index it freely."""
    if not isinstance(manifest, dict):
        return f"a JSON object is expected, not {type(manifest).__name__}"
    if not isinstance(manifest.get("stage"), str):
        return "it names no stage"
    if not isinstance(schema := manifest.get("schema", 1), int) or schema > SCHEMA:
        return f"its layout (schema {schema!r}) is newer than this vltk reads ({SCHEMA}): upgrade vltk"
    if not isinstance(manifest.get("contents"), dict):
        return "its 'contents' is missing or not an object"
    for key in ("config", "inputs"):  # a stage without either may leave it out: readers see an empty table
        if not isinstance(manifest.setdefault(key, {}), dict):
            return f"its '{key}' is not an object"
    for name, entry in manifest["inputs"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)):
            return f"its input '{name}' has no path"
    return None


def is_artifact(path: Path) -> bool:
    """Whether `path` is a finished vltk artifact (a directory with a well-formed manifest)."""
    try:
        return Path(path).is_dir() and bool(read_manifest(path))
    except VltkError:
        return False


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def open_artifact(path: Path, stage: str | tuple[str, ...]) -> dict[str, Any]:
    """Read the manifest at `path` and check that the artifact was made by `stage` (or one of several)."""
    manifest = read_manifest(path)
    wanted = (stage,) if isinstance(stage, str) else stage
    if manifest["stage"] not in wanted:
        raise VltkError(
            f"{path} is {_article(manifest['stage'])} '{manifest['stage']}' artifact, but "
            f"{_article(wanted[0])} {' or '.join(repr(str(s)) for s in wanted)} artifact is needed here"
        )
    return manifest


def input_path(artifact: Path, manifest: dict[str, Any], name: str) -> Path:
    """Where the input `name` of the artifact at `artifact` is now.

    Schema 2 stores an input's path relative to the artifact that names it (so a build folder can be moved, copied to
    another machine or used from any directory) and its absolute path when it was built (so an artifact moved on its
    own still finds inputs that stayed); schema 1 stored the path as typed, relative to the working directory then.
    The first of these that exists wins; when none does, the relative one is returned for the caller's error."""
    entry = manifest["inputs"][name]
    stored = Path(entry["path"])
    if manifest.get("schema", 1) < 2:
        return stored
    relative = Path(os.path.normpath(Path(artifact) / stored))
    for candidate in (relative, Path(entry.get("absolute", relative))):
        if candidate.exists():
            return candidate
    return relative


def upstream(artifact: Path, *names: str) -> Path:
    """The input artifact reached from `artifact` by following its inputs `names` in turn (e.g. a samples artifact's
    "generator" then "encoded"), where it is now; one line when a link is missing or gone."""
    path = Path(artifact)
    for name in names:
        manifest = read_manifest(path)
        if name not in manifest["inputs"]:
            raise VltkError(f"{path} has no input '{name}' (its inputs: {', '.join(manifest['inputs']) or 'none'})")
        found = input_path(path, manifest, name)
        if not is_artifact(found):
            raise VltkError(f"the '{name}' artifact {found} that {path} was made from is gone or unfinished")
        path = found
    return path


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


def describe_input(path: Path, artifact: Path) -> dict[str, str]:
    """{path, absolute, hash} for an upstream artifact, {path, absolute, fingerprint} for a raw source; `path` is
    relative to `artifact`, the artifact that names the input (see `input_path`)."""
    path = Path(path)
    where = {"path": os.path.relpath(os.path.abspath(path), os.path.abspath(artifact)),
             "absolute": os.path.abspath(path)}
    if (path / MANIFEST).is_file():
        return {**where, "hash": manifest_hash(path)}
    return {**where, "fingerprint": source_fingerprint(path)}


def write_bytes_atomic(file: Path, data: bytes) -> None:
    """Write `file` through a temporary file and a rename: a reader never sees half of it."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(file: Path, text: str) -> None:
    write_bytes_atomic(file, text.encode())


def write_json_atomic(file: Path, data: Any) -> None:
    write_text_atomic(file, json.dumps(data, indent=2, sort_keys=False) + "\n")


def make_manifest(identity: dict[str, Any], contents: dict[str, Any], started: float, **extra: Any) -> dict[str, Any]:
    """The full manifest of a run: its identity (stage, config, inputs), provenance, timing and contents."""
    return {
        "schema": SCHEMA,
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


RUN_RECORD = ".run.json"  # identity of the run a .partial/ directory belongs to (what `resume` checks)
WRITER = ".writer.json"  # {pid, host} of the process writing a .partial/ directory (for the message a second gets)


@dataclasses.dataclass(eq=False)
class Job:
    """One stage run in progress: files go under `work`; `publish` makes them the artifact at `out`.

    The process that began the job holds an exclusive lock on `work` (`lock` is its descriptor; None in the other
    processes of a distributed launch, which write into the main process's job)."""

    out: Path
    work: Path
    identity: dict[str, Any]
    resumable: bool = False
    lock: int | None = None
    started: float = dataclasses.field(default_factory=time.time)

    @property
    def resumed(self) -> bool:
        """Whether `work` holds what a killed run of this very config left (only with `begin(..., resume=True)`)."""
        return any(p.name not in (RUN_RECORD, WRITER) for p in self.work.iterdir())

    def publish(self, contents: dict[str, Any]) -> Path:
        if self.out.exists() and not is_artifact(self.out):  # something else appeared there while this job ran
            raise VltkError(f"{self.out} appeared while this run worked and is not a vltk artifact; its work stays "
                            f"in {self.work}")
        for name in (RUN_RECORD, WRITER):
            (self.work / name).unlink(missing_ok=True)
        write_json_atomic(self.work / MANIFEST, make_manifest(self.identity, contents, self.started))
        replace_dir(self.work, self.out)
        self.release()
        return self.out

    def release(self) -> None:
        """Let go of the lock on `work` (the process's exit does the same)."""
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None
        if self in _OPEN:
            _OPEN.remove(self)

    def abandon(self) -> None:
        """The run failed: remove its work unless a later run of the same config can continue it, and unlock."""
        if self.lock is not None and not self.resumable:
            shutil.rmtree(self.work, ignore_errors=True)
        self.release()


_OPEN: list[Job] = []  # the jobs this process began and has not yet published or abandoned


def abandon_open_jobs() -> None:
    """Called when a command fails: no half-written output stays behind, but a resumable run's `.partial/`."""
    for job in list(_OPEN):
        job.abandon()


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory `src` to `dst`, replacing what is there, with `dst` never missing a manifest half-way."""
    old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def identity(stage: str, config: Any, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    return {
        "stage": stage,
        "config": config_to_dict(config) if dataclasses.is_dataclass(config) else config,
        "inputs": {name: describe_input(p, out) for name, p in inputs.items()},
    }


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a finished artifact and the run asked for now ([] = the same run)."""
    diffs = []
    if old.get("stage") != new["stage"]:
        diffs.append(f"stage {old.get('stage')!r} != {new['stage']!r}")
    if old.get("config") != new["config"]:
        keys = sorted(set(old.get("config", {})) | set(new["config"]))
        diffs += [f"config.{k}" for k in keys if old.get("config", {}).get(k) != new["config"].get(k)]
    where = ("path", "absolute")  # where an input lies is not what it is: a moved build folder is the same run
    old_in = {k: {kk: vv for kk, vv in v.items() if kk not in where} for k, v in old.get("inputs", {}).items()}
    new_in = {k: {kk: vv for kk, vv in v.items() if kk not in where} for k, v in new["inputs"].items()}
    if old_in != new_in:
        diffs.append("inputs")
    return diffs


def check_output(out: Path, inputs: dict[str, Path]) -> None:
    """Refuse an output path whose replacement could destroy what vltk did not make, whatever `--force` says: one of
    the run's own inputs or a folder holding one, an input's inside, the working directory, the home folder or a
    folder holding either."""
    target = Path(os.path.realpath(out))
    for name, path in inputs.items():
        source = Path(os.path.realpath(path))
        if target == source or target in source.parents or source in target.parents:
            raise VltkError(f"the output {out} {'is' if target == source else 'overlaps'} the input {path} "
                            f"('{name}'); write the output somewhere else")
    for place, label in ((Path.cwd().resolve(), "the working directory"), (Path.home().resolve(), "the home folder")):
        if target == place or target in place.parents:
            raise VltkError(f"the output {out} is {label}{' or holds it' * (target != place)}; "
                            "write the output into a folder of its own")


def begin(
    out: Path, *, stage: str, config: Any, inputs: dict[str, Path], force: bool = False, resume: bool = False
) -> Job | None:
    """Start a stage run writing `out`; None when `out` already holds this very run (same config and inputs).

    The run works in `<out>.partial/`, locked against a second writer for as long as this process lives. `force`
    replaces a finished vltk artifact at `out`, never anything else, and starts over. With `resume` (and no `force`),
    what a killed run of the same config and inputs left in `<out>.partial/` is kept (its checkpoints or finished
    pieces let the stage continue); anything else there is cleared.
    """
    out = Path(out)
    check_output(out, inputs)
    ident = identity(stage, config, inputs, out)
    work = out.with_name(out.name + ".partial")
    lock = _claim(work, out)
    try:
        if up_to_date(out, ident, force):
            _let_go(work, lock)
            return None
        _check_replaceable(out, force)
        kept = resume and not force and _same_run(work, ident)  # --force starts over
        if not kept:
            _clear(work)
            write_json_atomic(work / RUN_RECORD, ident)
        write_json_atomic(work / WRITER, {"pid": os.getpid(), "host": socket.gethostname()})
    except BaseException:
        _let_go(work, lock)
        raise
    job = Job(out=out, work=work, identity=ident, resumable=resume, lock=lock)
    _OPEN.append(job)
    return job


def follow(out: Path, *, stage: str, config: Any, inputs: dict[str, Path], resume: bool = False) -> Job:
    """The job that the main process of a distributed launch began at `out`, for the other processes to write into:
    they take no lock and clear nothing, and only the main process publishes."""
    out = Path(out)
    return Job(out=out, work=out.with_name(out.name + ".partial"), identity=identity(stage, config, inputs, out),
               resumable=resume)


def _claim(work: Path, out: Path) -> int:
    """Create `work` if needed and lock it (flock: the OS drops the lock with the process, so a killed run leaves no
    stale lock); the open descriptor holds the lock. A second writer gets one line naming the first."""
    for job in [job for job in _OPEN if job.work == work]:  # an earlier run of this process that failed half-way
        job.release()
    while True:
        work.mkdir(parents=True, exist_ok=True)
        lock = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise VltkError(f"{out} is being written by another run ({_writer(work)}); wait for it to finish, or "
                            "stop it and run again") from None
        try:
            if os.stat(work).st_ino == os.fstat(lock).st_ino:
                return lock
        except FileNotFoundError:
            pass
        # The writer we waited on published (renamed) or removed the directory between our open and our lock: the
        # descriptor now points elsewhere, so start over on the path.
        os.close(lock)


def _writer(work: Path) -> str:
    try:
        who = json.loads((work / WRITER).read_text())
        return f"process {who['pid']} on {who['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


def _let_go(work: Path, lock: int) -> None:
    """No job after all: remove the `.partial/` that `_claim` made (if it holds nothing) and unlock."""
    try:
        work.rmdir()
    except OSError:
        pass  # not empty: a killed run's work, kept for whoever asks for it
    os.close(lock)


def _same_run(work: Path, ident: dict[str, Any]) -> bool:
    try:
        return not differences(json.loads((work / RUN_RECORD).read_text()), ident)
    except (OSError, ValueError, AttributeError):
        return False


def _clear(work: Path) -> None:
    """Empty `work` (the locked directory itself stays) of what a killed or different run left behind; a folder of
    that name that no vltk run made is not ours to empty."""
    children = list(work.iterdir())
    if children and not (work / RUN_RECORD).is_file():
        raise VltkError(f"{work} exists and was not made by a vltk run; move it away and run again")
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _check_replaceable(out: Path, force: bool) -> None:
    """`out` may be written: it is missing, an empty folder, or a finished vltk artifact and `force` is on."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
        return
    if not is_artifact(out):
        raise VltkError(f"{out} exists and is not a vltk artifact; vltk only replaces its own artifacts, so choose "
                        "another path or move it away")
    if not force:  # up_to_date has already said how it differs; this is a race with a run that just published
        raise VltkError(f"{out} was made by a different run; pass --force to rebuild it")


def up_to_date(out: Path, ident: dict[str, Any], force: bool) -> bool:
    """True when `out` already holds this very run; an error when it holds a different one and `force` is off."""
    if force or not is_artifact(out):
        return False
    diffs = differences(read_manifest(out), ident)
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
        if current.resolve() in seen or not is_artifact(current):
            continue
        seen.add(current.resolve())
        manifest = read_manifest(current)
        chain.append((current, manifest))
        queue += [input_path(current, manifest, name) for name, entry in manifest["inputs"].items() if "hash" in entry]
    return chain
