"""Untrusted input: scenario files and layer archives, fuzzed (bounded time)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
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


# -- hostile path parameters: past the check or not, nothing outside the container is touched ----------

#: an op that names a path, and what else it needs (page_cache and cold reads drop the machine's caches: left out)
PATH_OPS: dict[str, str] = {
    "write": "bytes = 3",
    "append": "",
    "overwrite": "",
    "truncate": "size = 0",
    "open_rdwr": "",
    "read": "",
    "stat": "",
    "fsync": "",
    "chmod": "mode = 0o4777",
    "chown": "uid = 4321\ngid = 4321",
    "unlink": "",
    "mkdir": "",
    "readdir": "",
    "expect": 'sha256 = "' + "0" * 64 + '"',
    "rename": 'to = "${q}"',
    "volume": 'kind = "tmpfs"\npopulate = true',
}
#: the null driver's container root is <cell>/mnt/null/root: up to four `..` reach the example's folder, never above
hostile_paths = st.one_of(
    st.builds(
        lambda k, name: "../" * k + "sentinel/" + name,
        st.integers(1, 4),
        st.sampled_from(["file", "new", "sub", "sub/x"]),
    ),
    st.builds(lambda k: "usr/" + "../" * k + "sentinel/file", st.integers(2, 5)),
    st.sampled_from(["ABS/file", "ABS/new", "ABS/sub", "ABS", "usr", "data/x", "a/\0b"]),
)


@pytest.mark.mounts  # the null driver's "dir" store is a bind mount as root
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(sorted(PATH_OPS)), st.sampled_from(["path", "glob"])), min_size=1, max_size=4
    ),
    p=hostile_paths,
    q=hostile_paths,
    image=st.sampled_from(["", "", "file", "remove"]),  # the image's own paths, or (mostly) only the steps'
)
def test_hostile_path_parameters_never_touch_anything_outside_the_container(
    tmp_path: Path, ops: list[tuple[str, str]], p: str, q: str, image: str
) -> None:
    """Scenario files whose path fields take hostile parameters: refused by the check with one line,
    and, run with the check bypassed (the null driver), confined anyway: a sentinel directory beside
    the container root stays byte-identical and nothing new appears beside it."""
    from unittest import mock

    from layerbench.plugins import default_plugins
    from layerbench.run.runner import Cell, run_cell

    from .checks import snapshot

    TRIED["hostile"] = TRIED.get("hostile", 0) + 1
    base = tmp_path / f"h{TRIED['hostile']}"
    sentinel = base / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "file").write_bytes(b"host data")
    p, q = (v.replace("ABS", str(sentinel.parent)) for v in (p, q))
    text = f'name = "hostile"\ndescription = "hostile paths"\n[params]\np = [{json.dumps(p)}]\nq = [{json.dumps(q)}]\n'
    text += "[image]\nlayers = 2\nfiles = 4\nbytes = 400\n"
    if image == "file":
        text += '[[image.file]]\npath = "${p}"\nsize = 3\n'
    if image == "remove":
        text += '[[image.remove]]\npath = "${q}"\nlayer = 1\n'
    text += '[repeat]\nsamples = 1\nwarmup = 0\n[[step]]\nop = "start"\n'
    for op, key in ops:
        key = key if OPS[op].selects else "path"
        text += f'[[step]]\nop = "{op}"\n{key} = "${{p}}"\nallow_errors = ["ENOENT", "ELOOP", "EXDEV", "EINVAL"]\n'
        text += PATH_OPS[op] + "\n"
    scenario = base / "s.toml"
    scenario.write_text(text)
    before, beside = snapshot(sentinel), sorted(os.listdir(base))
    try:
        load_scenario(scenario)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{scenario}: ")
    with mock.patch("layerbench.scenario._relative"):  # past the check: confinement alone must hold
        s = load_scenario(scenario)
    cls = default_plugins().driver("null")
    out = run_cell(Cell(s, cls, s.param_sets()[0], "dir"), base / "cell")
    assert out["status"] in ("ok", "error")
    assert snapshot(sentinel) == before
    assert sorted(os.listdir(base)) == beside
    with open("/proc/self/mountinfo") as f:
        assert str(base) not in f.read()
