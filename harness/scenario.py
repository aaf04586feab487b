"""Scenario files: declarative TOML, validated before anything runs.

A scenario names an image (and, in `[[images]]`, further images built on it in the
same store, or left for a `build` step to import: `prebuilt = false`), parameters to
sweep, how many samples to take, and the steps of one sample. `"${name}"` as a whole
value stands for a parameter. Every error names the file, the field and what is
allowed. docs/scenarios.md documents every field and step.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from layerbench.errors import UserError
from layerbench.images.image import Image, synthetic_from_table
from layerbench.images.oci_write import COMPRESSIONS
from layerbench.kernel.confined import path_error
from layerbench.ops import BOOL, ERRNOS, FRACTION, INT, MODE, NUMBER, OPS, SELECT, SIZE, STR
from layerbench.ops import MAX_WRITE_COUNT as MAX_WRITE_COUNT  # defined here before ops.py

__all__ = [
    "Scenario",
    "Step",
    "load_scenario",
    "builtin_scenarios",
    "resolve_scenarios",
    "synthetic_from_table",
    "SELECT",
]

_REF = re.compile(r"^\$\{([a-z_][a-z0-9_]*)\}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PARAM = re.compile(r"^[a-z_][a-z0-9_]*$")
_METRIC = re.compile(r"^[a-z][a-z0-9_]*_ns$")
BACKINGS = ("ext4", "xfs", "btrfs", "dir")

_KIND_TEXT = {
    INT: "a whole number >= 0",
    SIZE: "a size in bytes (a whole number >= 0)",
    STR: "a string",
    BOOL: "true or false",
    FRACTION: "a number in (0, 1]",
    NUMBER: "a number > 0",
    ERRNOS: 'a list of errno names such as ["EXDEV", "EROFS"]',
    MODE: "a file mode such as 0o644",
}
_COMMON = {"op", "measure", "allow_errors"}
_TOP = {"name", "description", "params", "sets", "image", "images", "repeat", "step", "backing", "quick", "long"}
_QUICK = {"params", "samples", "warmup"}
_SOURCES = {
    "synthetic": {"layers", "files", "bytes", "seed", "depth", "sigma", "file", "remove"},
    "dir": {"path"},
    "oci": {"path"},
    "docker-archive": {"path"},
}
# a synthetic image packed as an OCI layout with compressed layers (harness/images/oci.py), imported as one
_SOURCES["synthetic-oci"] = _SOURCES["synthetic"] | {"compression"}
# a real image built from Debian packages (harness/images/debian.py), and a user's image in a registry
_SOURCES["debian"] = {"recipe", "compression"}
_SOURCES["registry"] = {"reference", "token", "insecure"}
_IMAGE_FILE = {"path": (STR, True), "size": (SIZE, True), "layer": (INT, False), "mode": (MODE, False)}
_IMAGE_REMOVE = {"path": (STR, True), "layer": (INT, True)}
#: names `start` takes besides those of [[images]]: the [image] table, and the last commit's layer
RESERVED_IMAGES = ("base", "committed")
_IMAGES = {"name", "base", "source", "prebuilt", "recipe"} | _SOURCES["synthetic-oci"]
#: the sources an [[images]] entry takes: generated layers, the same packed as a compressed OCI layout,
#: or a Debian recipe (a `pull` step pulls it whole; layers it shares with an image in the store are not fetched)
_IMAGES_SOURCES = ("synthetic", "synthetic-oci", "debian")
_REPEAT = {"samples": (INT, False), "warmup": (INT, False), "min_time_s": (NUMBER, False), "adaptive": (BOOL, False)}


@dataclass(frozen=True)
class Step:
    op: str
    args: dict[str, Any]
    measure: str | None
    allow_errors: tuple[str, ...] = ()
    label: str = ""


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; `image(params)` and `steps(params)` resolve `${...}`."""

    name: str
    description: str
    path: str
    sha256: str
    sets: tuple[dict[str, Any], ...]
    raw_image: dict[str, Any]
    raw_images: tuple[dict[str, Any], ...]  # [[images]], in build order (each after its base)
    raw_steps: tuple[dict[str, Any], ...]
    raw_repeat: dict[str, Any]
    backings: tuple[str, ...] = ()
    overrides: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, list[Any]]:
        """Each parameter's values across the sets, in order."""
        out: dict[str, list[Any]] = {}
        for s in self.sets:
            for k, v in s.items():
                if v not in out.setdefault(k, []):
                    out[k].append(v)
        return out

    def param_sets(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.sets]

    def repeat(self, params: dict[str, Any]) -> tuple[int, int, float]:
        """(samples, warm-up samples, minimum seconds of sampling) for one parameter set."""
        r = _subst(self.raw_repeat, params)
        return r.get("samples", 5), r.get("warmup", 1), float(r.get("min_time_s", 0.0))

    def adaptive(self) -> bool:
        """Whether the runner may sample until the answer is sure (`[repeat] adaptive`, default true);
        false keeps `samples` exact (docs/scenarios.md)."""
        return bool(self.raw_repeat.get("adaptive", True))

    def image(self, params: dict[str, Any]) -> Image:
        """The [image], opened by the registered image source it names (harness/builtin_plugins.py or a plugin's)."""
        from layerbench.plugins import default_plugins

        img = _subst(self.raw_image, params)
        return default_plugins().image_source(img.get("source", "synthetic"))(img, Path(self.path).parent)

    def images(self, params: dict[str, Any], prebuilt: bool = True) -> list[tuple[str, str | None, Image]]:
        """The further images the runner builds before the samples (`prebuilt=False`: those a `build`
        step imports in each sample instead), in build order: name, base image name (None: from
        scratch) and own layers."""
        from layerbench.plugins import default_plugins

        out = []
        for raw in self.raw_images:
            if raw.get("prebuilt", True) != prebuilt:
                continue
            img = _subst(raw, params)
            table = {k: v for k, v in img.items() if k not in ("name", "base", "prebuilt")}
            opened = default_plugins().image_source(img.get("source", "synthetic"))(table, Path(self.path).parent)
            out.append((img["name"], img.get("base"), opened))
        return out

    def steps(self, params: dict[str, Any]) -> list[Step]:
        out = []
        for i, raw in enumerate(self.raw_steps):
            op = _subst(raw["op"], params)
            args = _subst({k: v for k, v in raw.items() if k not in _COMMON}, params)
            label = f"step[{i}] {op}"
            out.append(Step(op, args, raw.get("measure", OPS[op].measure), tuple(raw.get("allow_errors", ())), label))
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
    """Checks one file; every failure is one line naming the file and the field."""

    def __init__(self, path: str, params: dict[str, list[Any]]) -> None:
        self.path = path
        self.params = params
        self.images: tuple[str, ...] = RESERVED_IMAGES  # what `start` may name
        self.unbuilt: dict[str, int] = {}  # [[images]] with prebuilt = false, by name -> index
        self.imported: set[str] = set()  # those a build step so far imports

    def fail(self, where: str, message: str) -> UserError:
        return UserError(f"{self.path}: {where}: {message}")

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "expected a table")
        return value

    def keys(self, table: dict[str, Any], allowed: set[str] | dict[str, Any], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}{key}", f"unknown field; allowed: {', '.join(sorted(allowed))}")

    def value(self, value: Any, kind: Any, where: str) -> None:
        """Check a value, or every value a `${param}` in its place can take."""
        if isinstance(value, str) and (m := _REF.match(value)):
            name = m.group(1)
            if name not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise self.fail(where, f"unknown parameter ${{{name}}}; parameters: {known}")
            for v in self.params[name]:
                if not _ok(v, kind):
                    raise self.fail(where, f"parameter {name} = {v!r} is not {_describe(kind)}")
            return
        if not _ok(value, kind):
            raise self.fail(where, f'expected {_describe(kind)} or "${{param}}", got {value!r}')

    def is_param(self, value: Any) -> bool:
        """Whether `value` is a `${param}` reference (its values are checked by `value`)."""
        return isinstance(value, str) and _REF.match(value) is not None

    def bounded(self, value: Any, low: float, high: float, where: str) -> None:
        """A number between `low` and `high`, literal or every value of its `${param}`."""
        ref = _REF.match(value) if isinstance(value, str) else None
        for n in self.params.get(ref.group(1), []) if ref else [value]:
            if isinstance(n, (int, float)) and not isinstance(n, bool) and not low <= n <= high:
                shown = f"{n} (parameter {ref.group(1)})" if ref else f"{n}"
                raise self.fail(where, f"must be between {_number(low)} and {_number(high)}, got {shown}")

    def fields(self, table: dict[str, Any], spec: dict[str, tuple[Any, bool]], where: str) -> None:
        for key, (kind, required) in spec.items():
            if key in table:
                self.value(table[key], kind, f"{where}{key}")
            elif required:
                raise self.fail(f"{where}{key}", "required")


def _ok(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return value in kind
    if kind in (INT, SIZE, MODE):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind in (FRACTION, NUMBER):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return number and (kind == NUMBER or value <= 1)
    if kind == ERRNOS:
        return isinstance(value, list) and all(isinstance(v, str) and v in errno.errorcode.values() for v in value)
    raise AssertionError(kind)


def _describe(kind: Any) -> str:
    if isinstance(kind, tuple):
        return "one of " + ", ".join(repr(k) for k in kind)
    return _KIND_TEXT[kind]


def _relative(c: _Checker, path: Any, where: str, param: str | None = None) -> None:
    """A path inside the container (or image) root: relative, no `..`, no NUL, not empty.

    Checked on the literal and again on every value a `${param}` takes (from the file's
    sets and from --param), once substituted; `param` names the parameter then.
    """
    if not isinstance(path, str) or (param is None and _REF.match(path)):
        return
    why = path_error(path)
    if why is not None:
        raise c.fail(where, f"{why}, got {path!r}" + (f" (parameter {param})" if param else ""))


#: the fields of a step that name a path inside the container
_PATH_FIELDS = ("path", "to", "glob")


def _substituted_paths(c: _Checker, data: dict[str, Any], sets: list[dict[str, Any]]) -> None:
    """Every path-like field again, once each set's parameters are substituted (the literal
    check above sees only `${p}`)."""
    tables: list[tuple[str, dict[str, Any]]] = [(f"step[{i}].", s) for i, s in enumerate(data.get("step", []))]
    images = [("image", data.get("image", {})), *((f"images[{i}]", e) for i, e in enumerate(data.get("images", [])))]
    for at, image in images:
        for kind in ("file", "remove"):
            tables += [(f"{at}.{kind}[{i}].", e) for i, e in enumerate(image.get(kind, []))]
    for where, entry in tables:
        for key in _PATH_FIELDS:
            raw = entry.get(key)
            m = _REF.match(raw) if isinstance(raw, str) else None
            if m is None:
                continue
            for s in sets:
                _relative(c, s[m.group(1)], f"{where}{key}", m.group(1))


def _param_sets(
    data: dict[str, Any], path: str, overrides: dict[str, list[Any]], long: bool = False
) -> list[dict[str, Any]]:
    """Every combination of [params], or the listed [[sets]]; `overrides` replace values.

    The long sweeps are left out unless `long`: a [[sets]] entry with `long = true`, and the values of
    `[long] params` (added to [params]'s). A value `overrides` gives that no set has takes the first
    set's other values (the scenario's base case: `startup -p layers=2` is layers=2 with files=1000)."""
    c = _Checker(path, {})
    if "params" in data and "sets" in data:
        raise c.fail("sets", "give either [params] (every combination) or [[sets]] (listed sets), not both")
    ok_value = lambda v: isinstance(v, (int, str)) and not isinstance(v, bool)  # noqa: E731
    if "sets" in data:
        sets = data["sets"]
        if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
            raise c.fail("sets", "expected one or more [[sets]] tables of name = value")
        for i, s in enumerate(sets):
            if not isinstance(s.get("long", False), bool):
                raise c.fail(f"sets[{i}].long", "true (run only with --long) or false")
        if all(s.get("long") for s in sets):
            raise c.fail("sets", "at least one set must run without --long")
        sets = [{k: v for k, v in s.items() if k != "long"} for s in sets if long or not s.get("long")]
        names = set(sets[0])
        for i, s in enumerate(sets):
            if set(s) != names:
                raise c.fail(f"sets[{i}]", f"every set must name the same parameters: {', '.join(sorted(names))}")
            for k, v in s.items():
                if not _PARAM.match(k):
                    raise c.fail(f"sets[{i}].{k}", "parameter names are lower_snake_case")
                if not ok_value(v):
                    raise c.fail(f"sets[{i}].{k}", f"values are whole numbers or strings, got {v!r}")
        out = [dict(s) for s in sets]
        for name, new in overrides.items():
            if name in names:  # keep the sets with these values; a new value copies the first set
                kept = [s for s in out if s[name] in new]
                kept += [dict(sets[0], **{name: v}) for v in new if all(s[name] != v for s in out)]
                out = kept
        return out
    params = c.table(data.get("params", {}), "params")
    for name, values in params.items():
        if not _PARAM.match(name):
            raise c.fail(f"params.{name}", "parameter names are lower_snake_case")
        if not isinstance(values, list) or not values:
            raise c.fail(f"params.{name}", "expected a non-empty list of values")
        if not all(ok_value(v) for v in values):
            raise c.fail(f"params.{name}", f"values are whole numbers or strings, got {values!r}")
    extra = c.table(c.table(data.get("long", {}), "long").get("params", {}), "long.params")
    for name, values in extra.items():
        if name not in params:
            raise c.fail(f"long.params.{name}", "not a parameter of this scenario's [params]")
        if not isinstance(values, list) or not values or not all(ok_value(v) for v in values):
            raise c.fail(f"long.params.{name}", "expected a non-empty list of whole numbers or strings")
        if long:
            params = {**params, name: [*params[name], *(v for v in values if v not in params[name])]}
    params = {k: overrides.get(k, v) for k, v in params.items()}
    ordered = sorted(params)
    return [dict(zip(ordered, combo, strict=True)) for combo in itertools.product(*(params[n] for n in ordered))]


def _validate(data: dict[str, Any], path: str, sets: list[dict[str, Any]]) -> list[str]:
    """Check the whole file; return the names of its [[images]] in build order."""
    values: dict[str, list[Any]] = {}
    for s in sets:
        for k, v in s.items():
            values.setdefault(k, []).append(v)
    c = _Checker(path, values)
    c.keys(data, _TOP, "")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise c.fail(key, "required, a non-empty string")
    if not _NAME.match(data["name"]):
        raise c.fail("name", "lower-case letters, digits and '-' only")
    backing = data.get("backing", [])
    if not isinstance(backing, list) or not all(b in BACKINGS for b in backing):
        raise c.fail("backing", f"expected a list of backing filesystems from: {', '.join(BACKINGS)}")

    image = c.table(data.get("image"), "image") if "image" in data else None
    if image is None:
        raise c.fail("image", "required table")
    source = image.get("source", "synthetic")
    from layerbench.plugins import default_plugins  # the image-source registry: built-in sources and plugins'

    known = default_plugins().image_sources.items
    if source not in known:
        raise c.fail("image.source", f"unknown source {source!r}; allowed: {', '.join(known)}")
    c.keys(image, _SOURCES.get(source, set(image)) | {"source"}, "image.")  # a plugin's source checks its own
    if source in ("synthetic", "synthetic-oci"):
        _check_synthetic(c, image, "image")
        c.fields(image, {"compression": (tuple(COMPRESSIONS), False)}, "image.")
    elif source == "debian":
        _check_debian(c, image, "image")
    elif source == "registry":
        c.fields(image, {"reference": (STR, True), "token": (STR, False), "insecure": (BOOL, False)}, "image.")
    elif source in _SOURCES:
        raw = image.get("path")
        ref = _REF.match(raw) if isinstance(raw, str) else None
        for value in [s[ref.group(1)] for s in sets if ref.group(1) in s] if ref else [raw]:
            if not isinstance(value, str):
                raise c.fail("image.path", f"required for source {source!r}: a path, relative to the scenario file")
            _image_path(c, Path(path).parent, value, source)

    order = _image_order(c, data)
    c.images = RESERVED_IMAGES + tuple(order)
    c.unbuilt = {e["name"]: i for i, e in enumerate(data.get("images", [])) if e.get("prebuilt", True) is False}

    repeat = c.table(data.get("repeat", {}), "repeat")
    c.keys(repeat, _REPEAT, "repeat.")
    c.fields(repeat, _REPEAT, "repeat.")
    for s in sets:
        if _subst(repeat, s).get("samples", 5) < 1:
            raise c.fail("repeat.samples", "must be at least 1")

    steps = data.get("step")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise c.fail("step", "at least one [[step]] table is required")
    for i, step in enumerate(steps):
        where = f"step[{i}]."
        op = step.get("op")
        ops = [op]
        if isinstance(op, str) and (m := _REF.match(op)):  # one op per parameter value
            c.value(op, tuple(OPS), f"{where}op")
            ops = list(dict.fromkeys(values[m.group(1)]))
        for one in ops:
            _validate_step(c, step, one, where)
        if len(ops) == 1 and OPS[ops[0]].imports_image and isinstance(step.get("image"), str):
            c.imported.add(step["image"])
    for name, i in c.unbuilt.items():
        if name not in c.imported:
            raise c.fail(
                f"images[{i}].prebuilt", f"false, but no build or pull step imports {name!r} (image = {name!r})"
            )
    _substituted_paths(c, data, sets)
    return order


def _check_debian(c: _Checker, image: dict[str, Any], at: str) -> None:
    """The fields of a Debian-built image's table (harness/images/debian.py)."""
    from layerbench.images.debian import recipe_names

    c.fields(image, {"recipe": (recipe_names(), True), "compression": (tuple(COMPRESSIONS), False)}, f"{at}.")


def _image_path(c: _Checker, here: Path, value: str, source: str) -> None:
    """`[image] path` of a host source: there, and a directory or regular file (a fifo would
    block the first open before any cell, where no --cell-timeout applies)."""
    if "\0" in value:
        raise c.fail("image.path", f"{value!r} holds a NUL byte")
    target = here / value
    try:
        mode = os.stat(target).st_mode  # stat opens nothing: a fifo or a device cannot block it
    except FileNotFoundError:
        raise c.fail("image.path", f"{target} does not exist") from None
    except OSError as exc:
        raise c.fail("image.path", f"{target}: {exc.strerror}") from None
    want = stat.S_ISDIR(mode) if source == "dir" else stat.S_ISDIR(mode) or stat.S_ISREG(mode)
    if not want:
        kind = "a directory" if source == "dir" else "a directory or a regular file"
        raise c.fail("image.path", f"{target} is not {kind} (image source {source!r})")


#: what a synthetic image may ask for (docs/images.md, Limits): its layers, files and paths are
#: generated in memory before any cell, so each is bounded; `bytes` is bounded by the disk check
SYNTHETIC_BOUNDS: dict[str, tuple[float, float]] = {
    "layers": (1, 500),  # the kernel's overlay limit
    "files": (0, 1_000_000),
    "depth": (0, 1000),  # `usr/d0/d1/...`: 3 bytes a level, within PATH_MAX (4095)
    "sigma": (0, 20),  # the log-normal spread: a larger one overflows the sizes to inf
}


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _check_synthetic(c: _Checker, image: dict[str, Any], at: str) -> None:
    """The fields of a synthetic image's table (`image` or `images[i]`)."""
    c.fields(image, {k: (INT, False) for k in ("layers", "files", "bytes", "seed", "depth")}, f"{at}.")
    c.fields(image, {"sigma": (NUMBER, False)}, f"{at}.")
    for key, (low, high) in SYNTHETIC_BOUNDS.items():
        if key in image:
            c.bounded(image[key], low, high, f"{at}.{key}")
    for table, spec in (("file", _IMAGE_FILE), ("remove", _IMAGE_REMOVE)):
        entries = image.get(table, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise c.fail(f"{at}.{table}", f"expected an array of tables [[{at.split('[')[0]}.{table}]]")
        for i, entry in enumerate(entries):
            where = f"{at}.{table}[{i}]."
            c.keys(entry, spec, where)
            c.fields(entry, spec, where)
            _relative(c, entry["path"], f"{where}path")


def _image_order(c: _Checker, data: dict[str, Any]) -> list[str]:
    """Check `[[images]]` (synthetic, each named, its base known, no cycle); their names in build order."""
    entries = data.get("images", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise c.fail("images", "expected an array of tables [[images]], each with a name and its own layers")
    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"images[{i}]"
        c.keys(entry, _IMAGES, f"{where}.")
        c.fields(entry, {"source": (_IMAGES_SOURCES, False), "prebuilt": (BOOL, False)}, f"{where}.")
        if entry.get("source", "synthetic") == "debian":
            _check_debian(c, entry, where)
            if extra := sorted(set(entry) - {"name", "source", "prebuilt", "recipe", "compression"}):
                allowed = "name, recipe, compression, prebuilt"
                raise c.fail(f"{where}.{extra[0]}", f"not a field of a Debian image: {allowed}")
        elif "recipe" in entry:
            raise c.fail(f"{where}.recipe", 'only with source = "debian"')
        elif entry.get("source", "synthetic") == "synthetic-oci":
            c.fields(entry, {"compression": (tuple(COMPRESSIONS), False)}, f"{where}.")
        elif "compression" in entry:
            raise c.fail(f"{where}.compression", 'only with source = "synthetic-oci" (a packed, compressed image)')
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise c.fail(f"{where}.name", "required: lower-case letters, digits and '-' only")
        if name in RESERVED_IMAGES:
            raise c.fail(f"{where}.name", f"{name!r} is reserved ('base' is the [image] table, 'committed' a commit)")
        if name in names:
            raise c.fail(f"{where}.name", f"{name!r} is already images[{names[name]}]")
        names[name] = i
        if entry.get("source", "synthetic") != "debian":
            _check_synthetic(c, entry, where)
    bases = {e["name"]: e.get("base") for e in entries}
    for i, entry in enumerate(entries):
        base = entry.get("base")
        if base is not None and (not isinstance(base, str) or base not in ("base", *names)):
            raise c.fail(f"images[{i}].base", f"unknown image {base!r}; images: {', '.join(('base', *names))}")
        if base not in (None, "base") and entries[names[base]].get("prebuilt", True) is False:
            raise c.fail(f"images[{i}].base", f"{base!r} is not pre-built (prebuilt = false): no image builds on it")
    depth: dict[str, int] = {}
    for i, entry in enumerate(entries):
        chain = [entry["name"]]
        while (up := bases.get(chain[-1])) not in (None, "base"):
            if up in chain:
                raise c.fail(f"images[{i}].base", f"a cycle of bases: {' -> '.join([*chain, up])}")
            chain.append(up)
        depth[entry["name"]] = len(chain)
    return sorted(names, key=lambda n: (depth[n], names[n]))


def _validate_step(c: _Checker, step: dict[str, Any], op: Any, where: str) -> None:
    """The checks every step gets, and its op's own (`ops.Op.rules`, `ops.Op.path_rules`)."""
    if op not in OPS:
        raise c.fail(f"{where}op", f"unknown op {op!r}; allowed: {', '.join(OPS)}")
    spec, selects = OPS[op].fields, OPS[op].selects
    allowed = {*_COMMON, *spec, *(SELECT if selects else ())}
    for key in step:
        if key not in allowed:
            raise c.fail(f"{where}{key}", f"unknown field for op {op!r}; allowed: {', '.join(sorted(allowed))}")
    c.fields(step, spec, where)
    for rule in OPS[op].rules:
        rule(c, step, where)
    if selects:
        given = [k for k in SELECT if k in step]
        if len(given) != 1:
            raise c.fail(where.rstrip("."), f"op {op!r} needs exactly one of path, glob, fraction")
        c.value(step[given[0]], SELECT[given[0]], f"{where}{given[0]}")
    for key in ("path", "to", "glob"):
        if key in step:
            _relative(c, step[key], f"{where}{key}")
    for rule in OPS[op].path_rules:
        rule(c, step, where)
    if "allow_errors" in step:
        c.value(step["allow_errors"], ERRNOS, f"{where}allow_errors")
    if "measure" in step:
        if not isinstance(step["measure"], str) or not _METRIC.match(step["measure"]):
            raise c.fail(f"{where}measure", "a metric name in snake_case ending in _ns")
        if not OPS[op].timed:
            raise c.fail(f"{where}measure", f"op {op!r} records fixed metrics and times nothing")


def _quick(data: dict[str, Any], path: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The `[quick]` table: parameter values and repeat settings of the quick suite."""
    c = _Checker(path, {})
    quick = c.table(data.get("quick", {}), "quick")
    c.keys(quick, _QUICK, "quick.")
    params = c.table(quick.get("params", {}), "quick.params")
    for name, values in params.items():
        if not isinstance(values, list) or not values:
            raise c.fail(f"quick.params.{name}", "expected a non-empty list of values")
    for key in ("samples", "warmup"):
        if key in quick:
            c.value(quick[key], INT, f"quick.{key}")
    return dict(params), {k: quick[k] for k in ("samples", "warmup") if k in quick}


def load_scenario(
    path: Path | str, overrides: dict[str, list[Any]] | None = None, quick: bool = False, long: bool = False
) -> Scenario:
    """Read and validate one scenario file; raises UserError naming the file and field.

    `quick` applies the file's `[quick]` table (fewer parameter values and samples)
    under `overrides`; `long` adds its long sweeps (`long = true` sets, `[long] params`).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    quick_params, quick_repeat = _quick(data, str(path))
    if quick:
        overrides = {**quick_params, **(overrides or {})}
    sets = _param_sets(data, str(path), overrides or {}, long)
    order = _validate(data, str(path), sets)
    known = set().union(*(s.keys() for s in sets)) if sets else set()
    for name in quick_params:
        if name not in known:
            raise UserError(f"{path}: quick.params.{name}: not a parameter of this scenario")
    repeat = {**data.get("repeat", {}), **(quick_repeat if quick else {})}
    by_name = {e["name"]: e for e in data.get("images", [])}
    return Scenario(
        name=data["name"],
        description=" ".join(data["description"].split()),
        path=str(path),
        sha256=hashlib.sha256(raw).hexdigest(),
        sets=tuple(sets),
        raw_image=data["image"],
        raw_images=tuple(by_name[n] for n in order),
        raw_steps=tuple(data["step"]),
        raw_repeat=dict(repeat),
        backings=tuple(data.get("backing", ())),
        overrides=dict(overrides or {}),
    )


def builtin_scenarios() -> dict[str, Path]:
    """The scenario files shipped with layerbench, by name (file stem)."""
    root = resources.files("layerbench.scenarios")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_scenarios(
    names: tuple[str, ...], overrides: dict[str, list[Any]] | None = None, quick: bool = False, long: bool = False
) -> list[Scenario]:
    """Turn names of built-ins or paths to .toml files into validated scenarios (`long`: with their long sweeps)."""
    builtins = builtin_scenarios()
    chosen = names or tuple(sorted(builtins))
    out = []
    for name in chosen:
        if name in builtins:
            out.append(load_scenario(builtins[name], overrides, quick, long))
        elif name.endswith(".toml") or "/" in name:
            out.append(load_scenario(Path(name), overrides, quick, long))
        else:
            raise UserError(f"unknown scenario {name!r}; built-in scenarios: {', '.join(sorted(builtins))}")
    known = {k for s in out for k in s.params}
    for name in overrides or {}:
        if name not in known:
            raise UserError(
                f"--param {name}: no chosen scenario has this parameter; "
                f"their parameters: {', '.join(sorted(known)) or 'none'}"
            )
    return out
