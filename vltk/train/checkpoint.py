"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON; atomic; the last k kept.

    stage = begin_checkpoint(root, step)                        # every rank
    save_rng(stage, rank)                                        # every rank: its own RNG streams
    save_training_state(stage, step=step, modules=..., optimizers=..., ema=ema, extra={"position": n})   # rank 0
    commit_checkpoint(stage, keep=2)                             # rank 0, after a barrier
    ...
    state = restore_checkpoint(root, modules=..., optimizers=..., ema=ema, rank=rank, say=print)   # None: fresh run

A checkpoint directory `step-00000123/` holds:
    modules.safetensors     each module's state dict, keys prefixed by the module's name ("model.", "disc.")
    ema.safetensors         the EMA weights (when EMA is on)
    optimizers.safetensors  optimiser state tensors, keyed "<optimizer>.<param index>.<field>"
    state.json              step, extra (data position, ...), optimisers' param groups and non-tensor state fields
    rng-<rank>.safetensors  torch CPU (and CUDA) generator states as uint8 tensors
    rng-<rank>.json         python `random` and numpy global states
    checksums.json          the sha256 of each file above, read back from disk when the checkpoint is sealed
It is written as `.step-00000123.tmp/` and renamed when complete, so a kill never leaves a half checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vltk.errors import VltkError
from vltk.train.ema import EMA

PREFIX = "step-"
CHECKSUMS = "checksums.json"  # {file name: sha256} of every other file, written last: a checkpoint vouches for itself


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def begin_checkpoint(root: Path, step: int) -> Path:
    """The staging directory of step `step`'s checkpoint (created; idempotent so every rank may call it)."""
    stage = Path(root) / f".{checkpoint_name(step)}.tmp"
    stage.mkdir(parents=True, exist_ok=True)
    return stage


def _tensors(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    # Copies: safetensors refuses tensors that share storage (tied weights), and the files must hold CPU tensors.
    return {f"{prefix}{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state dict as (tensors keyed "<name>.<param>.<field>", the JSON-ready rest)."""
    sd = optimizer.state_dict()
    tensors, fields = {}, {}
    for index, entry in sd["state"].items():
        plain = {}
        for field, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{index}.{field}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                plain[field] = value
        fields[str(index)] = plain
    return tensors, {"param_groups": sd["param_groups"], "state": fields}


def _unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(plain) for i, plain in saved["state"].items()}
    for key, value in tensors.items():
        owner, index, field = key.split(".", 2)
        if owner == name:
            state.setdefault(int(index), {})[field] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def save_training_state(
    stage: Path, *, step: int, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
    ema: EMA | None, extra: dict[str, Any],
) -> None:
    """Write the shared (rank-independent) part of a checkpoint: weights, EMA, optimisers, step and `extra`."""
    weights = {}
    for name, module in modules.items():
        weights.update(_tensors(module.state_dict(), f"{name}."))
    save_file(weights, str(stage / "modules.safetensors"))
    if ema is not None:
        save_file(_tensors(ema.state_dict(), ""), str(stage / "ema.safetensors"))
    optim_tensors, optim_json = {}, {}
    for name, optimizer in optimizers.items():
        tensors, rest = _flatten_optimizer(name, optimizer)
        optim_tensors.update(tensors)
        optim_json[name] = rest
    save_file(optim_tensors, str(stage / "optimizers.safetensors"))
    state = {"step": step, "extra": extra, "optimizers": optim_json}
    (stage / "state.json").write_text(json.dumps(state, indent=1) + "\n")


def save_rng(stage: Path, rank: int) -> None:
    """This process's RNG streams: torch CPU and CUDA as uint8 tensors, python `random` and numpy as JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(stage / f"rng-{rank}.safetensors"))
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": [version, list(internal), gauss],
              "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    (stage / f"rng-{rank}.json").write_text(json.dumps(states) + "\n")


def commit_checkpoint(stage: Path, keep: int) -> Path:
    """Seal a complete staging directory with the checksums of its files (read back from disk, so they vouch for what
    was written), rename it into place and delete all but the `keep` newest checkpoints."""
    sums = {f.name: _sha256(f) for f in sorted(stage.iterdir()) if f.is_file() and f.name != CHECKSUMS}
    (stage / CHECKSUMS).write_text(json.dumps(sums, indent=1) + "\n")
    final = stage.with_name(stage.name[1:].removesuffix(".tmp"))
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)
    for old in _checkpoints(stage.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoints(root: Path) -> list[Path]:
    if not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    found = _checkpoints(root)
    return found[-1] if found else None


def _sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def damage(path: Path) -> str | None:
    """What is wrong with checkpoint `path` (None: every file is as it was written). A checkpoint from before
    checksums were kept is checked by reading every file instead."""
    try:
        sums = json.loads((path / CHECKSUMS).read_text())
    except FileNotFoundError:
        return _unreadable(path)
    except (OSError, ValueError) as err:
        return f"{CHECKSUMS} is unreadable ({err})"
    if not isinstance(sums, dict):
        return f"{CHECKSUMS} is not a table of checksums"
    for name, digest in sums.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def _unreadable(path: Path) -> str | None:
    for file in sorted(path.iterdir()):
        try:
            if file.suffix == ".safetensors":
                load_file(str(file))
            elif file.suffix == ".json":
                json.loads(file.read_text())
        except (OSError, ValueError, SafetensorError) as err:
            return f"{file.name} is unreadable ({err})"
    return None


def restore_checkpoint(
    root: Path, *, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], ema: EMA | None,
    rank: int, say: Callable[[str], None],
) -> dict[str, Any] | None:
    """Restore the newest intact checkpoint under `root` (weights, EMA, optimisers and this rank's RNG streams) and
    return {"step", "extra", "path"}; a damaged one is skipped, saying so; None when there is none to continue from."""
    for path in reversed(_checkpoints(root)):
        if (problem := damage(path)) is not None:
            say(f"checkpoint {path.name} is damaged ({problem}); trying the one before it")
            continue
        state = load_training_state(path, modules=modules, optimizers=optimizers, ema=ema)
        load_rng(path, rank)
        return {**state, "path": path}
    if _checkpoints(root):
        say("no intact checkpoint is left: starting from step 0")
    return None


def load_training_state(
    path: Path, *, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], ema: EMA | None,
) -> dict[str, Any]:
    """Restore weights, EMA and optimisers from checkpoint `path` in place; return {"step", "extra"}."""
    state = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "modules.safetensors"))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    if ema is not None:
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    optim_tensors = load_file(str(path / "optimizers.safetensors"))
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(_unflatten_optimizer(name, optim_tensors, state["optimizers"][name]))
    return {"step": state["step"], "extra": state["extra"]}


def load_rng(path: Path, rank: int) -> None:
    """Restore this process's RNG streams saved by `save_rng`."""
    tensors = load_file(str(path / f"rng-{rank}.safetensors"))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors) - 1)]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    states = json.loads((path / f"rng-{rank}.json").read_text())
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def load_published_weights(model: nn.Module, artifact: Path, name: str = "model.safetensors") -> nn.Module:
    """Load a published artifact's weights file into `model`, strictly; a missing or mismatched file is one clear
    error (a `VltkError` naming the artifact). Returns the model in eval mode."""
    file = Path(artifact) / name
    if not file.is_file():
        raise VltkError(f"{artifact} has no {name}")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise VltkError(f"{file} is not a readable safetensors file ({err}); rebuild {artifact}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise VltkError(f"{file} does not match the model config in {artifact}/manifest.json: {err}") from None
    return model.eval()



def layout_mismatch(got: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """What keeps a state dict's key -> shape table `got` from being `expected` ("missing: a, b; unexpected: c; wrong
    shape: d (2, 3) != (3, 2)", three keys at most of each), or None when it is exactly that; for the one-line error of
    an importer of someone else's checkpoint."""
    missing = sorted(expected.keys() - got.keys())
    unexpected = sorted(got.keys() - expected.keys())
    wrong = sorted(f"{k} {got[k]} != {expected[k]}" for k in expected.keys() & got.keys() if got[k] != expected[k])
    parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    return "; ".join(parts) or None
