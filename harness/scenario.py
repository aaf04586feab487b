"""Scenario files: declarative TOML, validated before anything runs.

A scenario names an image, parameters to sweep, how many samples to take, and the
steps of one sample. `${name}` as a whole value stands for a swept parameter.
docs/scenarios.md documents every field.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError
from .image import FileSpec, ImageSpec, synthetic_image

__all__ = ["Scenario", "Step", "load_scenario", "builtin_scenarios", "resolve_scenarios", "STEP_FIELDS"]

_REF = re.compile(r"^\$\{([a-z_][a-z0-9_]*)\}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_METRIC = re.compile(r"^[a-z][a-z0-9_]*_(ns|bytes)$")

#: op -> {field: (type, required)}; every step may also have `measure`.
STEP_FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "start": {"count": (int, False)},
    "append": {"path": (str, True), "bytes": (int, False)},
    "read": {"path": (str, True)},
    "unlink": {"path": (str, True)},
    "usage": {},
}
#: what an op measures when the step names no metric, and whether it can be timed at all
DEFAULT_MEASURE = {"start": "startup_ns", "append": None, "read": None, "unlink": None, "usage": None}
_TOP = {"name", "description", "params", "image", "repeat", "step"}
_IMAGE = {"source", "layers", "files", "bytes", "seed", "depth", "file"}
_IMAGE_FILE = {"path", "size", "layer"}
_REPEAT = {"samples", "warmup"}


@dataclass(frozen=True)
class Step:
    op: str
    args: dict[str, Any]
    measure: str | None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; `image(params)` and `steps(params)` resolve `${...}`."""

    name: str
    description: str
    path: str
    sha256: str
    params: dict[str, list[Any]]
    raw_image: dict[str, Any]
    raw_steps: tuple[dict[str, Any], ...]
    samples: int
    warmup: int
    overrides: dict[str, list[Any]] = field(default_factory=dict)

    def param_sets(self) -> list[dict[str, Any]]:
        """Every combination of the swept parameters (one empty set when none)."""
        names = sorted(self.params)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.params[n] for n in names))]

    def image(self, params: dict[str, Any]) -> ImageSpec:
        img = _subst(self.raw_image, params)
        layers = img.get("layers", 1)
        extra = tuple(
            (f.get("layer", 0), FileSpec(path=f["path"], size=f["size"], seed=img.get("seed", 0) + 7 + i))
            for i, f in enumerate(img.get("file", []))
        )
        return synthetic_image(
            layers=layers,
            files=img.get("files", 100),
            total_bytes=img.get("bytes", 1 << 20),
            seed=img.get("seed", 0),
            depth=img.get("depth", 3),
            extra=extra,
        )

    def steps(self, params: dict[str, Any]) -> list[Step]:
        out = []
        for raw in self.raw_steps:
            args = _subst({k: v for k, v in raw.items() if k not in ("op", "measure")}, params)
            op = raw["op"]
            out.append(Step(op=op, args=args, measure=raw.get("measure", DEFAULT_MEASURE[op])))
        return out


def _subst(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _subst(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_subst(v, params) for v in value]
    if isinstance(value, str) and (m := _REF.match(value)):
        return params[m.group(1)]
    return value


class _Checker:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> UserError:
        return UserError(f"{self.path}: {where}: {message}")

    def keys(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}{key}", f"unknown field; allowed: {', '.join(sorted(allowed))}")

    def value(self, table: dict[str, Any], key: str, kind: type, where: str, params: dict[str, Any]) -> None:
        value = table[key]
        if isinstance(value, str) and (m := _REF.match(value)):
            if m.group(1) not in params:
                known = ", ".join(sorted(params)) or "none"
                raise self.fail(f"{where}{key}", f"unknown parameter ${{{m.group(1)}}}; parameters: {known}")
            return
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise self.fail(f"{where}{key}", f"expected a whole number >= 0 or ${{param}}, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise self.fail(f"{where}{key}", f"expected a string, got {value!r}")


def _validate(data: dict[str, Any], path: str) -> None:
    c = _Checker(path)
    c.keys(data, _TOP, "")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise c.fail(key, "required, a non-empty string")
    if not _NAME.match(data["name"]):
        raise c.fail("name", "lower-case letters, digits and '-' only")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise c.fail("params", "expected a table of name = [values]")
    for name, values in params.items():
        if not re.match(r"^[a-z_][a-z0-9_]*$", name):
            raise c.fail(f"params.{name}", "parameter names are lower_snake_case")
        if not isinstance(values, list) or not values:
            raise c.fail(f"params.{name}", "expected a non-empty list of values")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise c.fail(f"params.{name}", f"values must be whole numbers >= 0, got {values!r}")
    image = data.get("image")
    if not isinstance(image, dict):
        raise c.fail("image", "required table")
    c.keys(image, _IMAGE, "image.")
    if image.get("source", "synthetic") != "synthetic":
        raise c.fail("image.source", f"unknown source {image['source']!r}; allowed: synthetic")
    for key in ("layers", "files", "bytes", "seed", "depth"):
        if key in image:
            c.value(image, key, int, "image.", params)
    if isinstance(image.get("layers"), int) and not 1 <= image["layers"] <= 500:
        raise c.fail("image.layers", "must be between 1 and 500")
    files = image.get("file", [])
    if not isinstance(files, list):
        raise c.fail("image.file", "expected an array of tables [[image.file]]")
    for i, f in enumerate(files):
        where = f"image.file[{i}]."
        c.keys(f, _IMAGE_FILE, where)
        for key, kind in (("path", str), ("size", int)):
            if key not in f:
                raise c.fail(f"{where}{key}", "required")
            c.value(f, key, kind, where, params)
        if "layer" in f:
            c.value(f, "layer", int, where, params)
        p = f["path"]
        if p.startswith("/") or ".." in p.split("/"):
            raise c.fail(f"{where}path", "must be relative to the image root, without '..'")
    repeat = data.get("repeat", {})
    c.keys(repeat, _REPEAT, "repeat.")
    for key in _REPEAT & repeat.keys():
        c.value(repeat, key, int, "repeat.", {})
    if repeat.get("samples", 5) < 1:
        raise c.fail("repeat.samples", "must be at least 1")
    steps = data.get("step")
    if not isinstance(steps, list) or not steps:
        raise c.fail("step", "at least one [[step]] is required")
    for i, step in enumerate(steps):
        where = f"step[{i}]."
        op = step.get("op")
        if op not in STEP_FIELDS:
            raise c.fail(f"{where}op", f"unknown op {op!r}; allowed: {', '.join(STEP_FIELDS)}")
        fields = STEP_FIELDS[op]
        c.keys(step, {"op", "measure", *fields}, where)
        for key, (kind, required) in fields.items():
            if key not in step:
                if required:
                    raise c.fail(f"{where}{key}", f"required by op {op!r}")
                continue
            c.value(step, key, kind, where, params)
        if "measure" in step:
            if op == "usage":
                raise c.fail(f"{where}measure", "op 'usage' always records disk_bytes, disk_walk_bytes, inodes")
            if not isinstance(step["measure"], str) or not _METRIC.match(step["measure"]):
                raise c.fail(f"{where}measure", "a metric name in snake_case ending in _ns")


def load_scenario(path: Path | str, overrides: dict[str, list[Any]] | None = None) -> Scenario:
    """Read and validate one scenario file; raises UserError naming the file and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    _validate(data, str(path))
    params = {k: list(v) for k, v in data.get("params", {}).items()}
    for name, values in (overrides or {}).items():
        if name in params:
            params[name] = values
    repeat = data.get("repeat", {})
    return Scenario(
        name=data["name"],
        description=" ".join(data["description"].split()),
        path=str(path),
        sha256=hashlib.sha256(raw).hexdigest(),
        params=params,
        raw_image=data["image"],
        raw_steps=tuple(data["step"]),
        samples=repeat.get("samples", 5),
        warmup=repeat.get("warmup", 1),
        overrides=dict(overrides or {}),
    )


def builtin_scenarios() -> dict[str, Path]:
    """The scenario files shipped with layerbench, by name (file stem)."""
    root = resources.files("layerbench.scenarios")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_scenarios(names: tuple[str, ...], overrides: dict[str, list[Any]] | None = None) -> list[Scenario]:
    """Turn names of built-ins or paths to .toml files into validated scenarios."""
    builtins = builtin_scenarios()
    chosen = names or tuple(sorted(builtins))
    out = []
    for name in chosen:
        if name in builtins:
            out.append(load_scenario(builtins[name], overrides))
        elif name.endswith(".toml") or "/" in name:
            out.append(load_scenario(Path(name), overrides))
        else:
            raise UserError(f"unknown scenario {name!r}; built-in scenarios: {', '.join(sorted(builtins))}")
    return out
