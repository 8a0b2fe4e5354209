"""The shapes of the JSON that vltk reads back from its artifacts, checked where it is read: a damaged row or member is
one error that says where it is and what is wrong, not a KeyError or TypeError deep inside a stage.

    ROW = Shape({"index": int, "file": str}, optional={"references": list[str], "caption": (str, None)})
    rows = read_jsonl(path, ROW)            # a VltkError naming the file and the line of the first bad row

A field's kind is a type (int excludes bool), None (JSON null), list[kind], Literal[values], a nested Shape, or a
tuple of kinds (any of them).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal, Mapping, get_args, get_origin

from vltk.errors import VltkError


@dataclasses.dataclass(frozen=True)
class Shape:
    """A JSON object with the `required` fields and maybe the `optional` ones, each of its kind; others are ignored."""

    required: Mapping[str, Any]
    optional: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def problem(self, value: Any, path: str = "") -> str | None:
        """What is wrong with `value` ("the JSON has no 'file' field", "field 'a.key' is not a string"), or None when it
        has this shape; `path` is where a nested shape sits."""
        subject = f"field {path!r}" if path else "the JSON"
        if not isinstance(value, dict):
            return f"{subject} is {_describe(type(value))}, not an object"
        missing = [name for name in self.required if name not in value]
        if missing:
            return f"{subject} has no {missing[0]!r} field"
        for name, kind in {**self.required, **self.optional}.items():
            if name not in value:
                continue
            where = f"{path}.{name}" if path else name
            if isinstance(kind, Shape):
                inner = kind.problem(value[name], where)
                if inner is not None:
                    return inner
            elif not fits(value[name], kind):
                return f"field {where!r} is not {_describe(kind)}"
        return None

    def check(self, value: Any) -> dict[str, Any]:
        """`value`, or a ValueError saying what is wrong with it."""
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def parse(self, data: bytes | str) -> dict[str, Any]:
        """The JSON text `data` as an object of this shape, or a ValueError (json's own for text that is no JSON)."""
        return self.check(json.loads(data))


def fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value is of `kind` (see the module docstring; a nested Shape is checked by Shape.problem)."""
    if isinstance(kind, tuple):
        return any(fits(value, k) for k in kind)
    if kind is None:
        return value is None
    if get_origin(kind) is Literal:
        return isinstance(value, str | int) and value in get_args(kind)
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return isinstance(value, list) and all(fits(v, item) for v in value)
    if kind is int:  # True is no index
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_describe(k) for k in kind)
    if kind is None or kind is type(None):
        return "null"
    if get_origin(kind) is Literal:
        return " or ".join(json.dumps(v) for v in get_args(kind))
    if get_origin(kind) is list:
        return f"a list ({_describe(get_args(kind)[0])} each)"
    return {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "true or false"}.get(kind, kind.__name__)


def read_jsonl(path: Path, shape: Shape) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file, one per non-empty line; a file that cannot be read, is not UTF-8 or has a line
    that is no JSON object of `shape` is a VltkError naming the file (and the line)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise VltkError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise VltkError(f"{path} is not UTF-8 text (byte {err.start}); the file is damaged") from None
    rows = []
    # Only '\n' ends a line: str.splitlines would also split inside a string holding U+2028 or '\x1c'.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(shape.parse(line))
        except ValueError as err:  # json.JSONDecodeError is one
            raise VltkError(f"{path}: line {number}: {_reason(err)}; the file is damaged") from None
    return rows


def _reason(err: ValueError) -> str:
    return str(err) if not isinstance(err, json.JSONDecodeError) else f"not JSON ({err.msg} at column {err.colno})"
