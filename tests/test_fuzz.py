"""Untrusted input: scenario files and layer archives, fuzzed (bounded time)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images.layer_tar import apply_tar_layer
from layerbench.ops import OPS
from layerbench.scenario import load_scenario

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TRIED: dict[str, int] = {"scenario": 0, "archive": 0}  # names each example's own folder

names = st.sampled_from(
    [
        "name",
        "description",
        "params",
        "sets",
        "image",
        "repeat",
        "step",
        "backing",
        "op",
        "path",
        "layers",
        "files",
        "bytes",
        "count",
        "samples",
        "x",
        "source",
        "measure",
        "allow_errors",
        "fraction",
        "glob",
        "file",
        "remove",
        "layer",
        "size",
        "mode",
    ]
)
scalars = st.one_of(
    st.integers(-3, 1 << 40),
    st.text(max_size=12),
    st.booleans(),
    st.floats(allow_nan=True),
    st.sampled_from(["${x}", "${layers}", "../x", "/abs", "start", "append", "EXDEV", "synthetic"]),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=4), max_leaves=12
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"


@FUZZ
@given(
    doc=st.dictionaries(names, values, max_size=8),
    step=st.fixed_dictionaries({"op": st.sampled_from([*OPS, "boom"])}, optional={"path": scalars, "count": scalars}),
)
def test_scenario_parser_never_crashes(tmp_path: Path, doc: dict, step: dict) -> None:
    TRIED["scenario"] += 1
    text = "\n".join(f"{k} = {_toml(v)}" for k, v in doc.items() if k != "step")
    text += "\n[[step]]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in step.items())
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    try:
        s = load_scenario(path)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return
    for params in s.param_sets()[:3]:  # a file that loads resolves without surprises
        s.steps(params)
        s.repeat(params)


entry = st.tuples(
    st.lists(
        st.sampled_from(["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh..", "/", "c"]), min_size=1, max_size=4
    ).map("/".join),
    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
    st.sampled_from(["a", "../..", "/etc", "b/../../x", "a/b", ".."]),
)


@FUZZ
@given(entries=st.lists(entry, min_size=1, max_size=8), fmt=st.sampled_from(list(LayerFormat)))
def test_archive_importer_never_writes_outside_the_root(tmp_path: Path, entries: list, fmt: LayerFormat) -> None:
    TRIED["archive"] += 1
    base = tmp_path / f"t{TRIED['archive']}"
    root, sentinel = base / "root", base / "sentinel"
    root.mkdir(parents=True)
    sentinel.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, target in entries:
            info = tarfile.TarInfo(name or ".")
            info.type, info.linkname = kind, target
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    try:
        apply_tar_layer(root, buf, fmt)
    except UserError as exc:
        assert "\n" not in str(exc)
    assert os.listdir(sentinel) == [] and sorted(os.listdir(base)) == ["root", "sentinel"]
