"""Typed, frozen configs: defaults in dataclasses, experiments in TOML, tweaks as dotted overrides.

    cfg = load_config(ShardConfig, Path("stages/demo/shard.toml"), ["size=64", "val_fraction=0.05"])

Layers merge in order: dataclass defaults <- TOML file <- command-line flags <- `--set key=value`. Unknown keys and
wrong types are errors that name the key and suggest the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from vltk.errors import VltkError

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON/TOML-ready data (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from nested `data`; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise VltkError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid keys: {', '.join(names)})"
            raise VltkError(f"unknown config key '{prefix}{key}'{hint}")
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[key]):
            value = {**_own_defaults(fields[key], hints[key]), **value}
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # __post_init__ validation or a missing required field
        raise VltkError(f"invalid config{f' {prefix.rstrip(chr(46))}' if prefix else ''}: {err}") from None


def _own_defaults(field: dataclasses.Field, tp: type) -> dict[str, Any]:
    """The values where a field's default (e.g. MaskGIT's optimiser without weight decay) differs from its type's
    defaults, so that a partial table for that field keeps them."""
    if field.default_factory is dataclasses.MISSING:
        return {}
    own = field.default_factory()
    values = config_to_dict(own)
    try:
        plain = tp()
    except TypeError:  # the type has required fields: every value of the field's default is its own
        return values
    return {f.name: values[f.name] for f in dataclasses.fields(tp) if getattr(own, f.name) != getattr(plain, f.name)}


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting only where no information is lost (int -> float, list -> tuple,
    a single item -> a tuple of one for a `tuple[X, ...]` field)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(arm, value, key)
            except VltkError as err:
                errors.append(str(err))
        raise VltkError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise VltkError(f"config key '{key}' must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        item = args[0] if args else Any
        if not isinstance(value, (list, tuple)):
            if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # one item spells a list of one
                return (_coerce(item, value, key),)
            raise VltkError(f"config key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise VltkError(f"config key '{key}' must be a table, got {value!r}")
        return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool) or tp is int and isinstance(value, bool):
        raise VltkError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    if not isinstance(value, tp):
        raise VltkError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.depth=12' -> (['model', 'depth'], 12). The value is read as TOML, else as a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise VltkError(f"override '{text}' is not of the form key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    """Set base[path[0]][path[1]]... = value in place, creating tables on the way."""
    node = base
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise VltkError(f"cannot set '{'.'.join(path)}': '{part}' is not a table")
    node[path[-1]] = value


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise VltkError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise VltkError(f"config file {path} is not valid TOML: {err}") from None


def load_config(
    cls: type[C],
    path: Path | None = None,
    overrides: typing.Sequence[str] = (),
    flags: dict[str, Any] | None = None,
) -> C:
    """Defaults <- TOML at `path` <- `flags` (dotted keys, None means 'not given') <- `overrides` ('a.b=v')."""
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    for key, value in (flags or {}).items():
        if value is not None:
            merge(data, key.split("."), value)
    for text in overrides:
        merge(data, *parse_override(text))
    return from_dict(cls, data)


def require_range(cfg: Any, *names: str, low: float = 1, strict: bool = False, prefix: str = "") -> None:
    """A config's __post_init__ check, the one every config uses: each named field must be >= `low` (> `low` when
    `strict`); NaN fails too. `prefix` names the config's table in the error ("loss." -> "loss.disc_weight")."""
    for name in names:
        value = getattr(cfg, name)
        if not (value > low if strict else value >= low):
            raise ValueError(f"{prefix}{name} must be {'>' if strict else '>='} {low}, got {value!r}")

