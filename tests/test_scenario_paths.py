"""The parameter escape of issue 20: every path-like field is checked once parameters are substituted.

A scenario's `path = "${p}"` with `p = ["../../../../x"]` or `["/abs/x"]` (in its own
params, its sets, or given by --param) used to pass the literal check and reach the
host. Each case replays the attack on one field and op and wants exit 2 with one line
naming the file, the field and the value, before any cell runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.cli import main
from layerbench.errors import UserError
from layerbench.scenario import load_scenario, resolve_scenarios

HEAD = """
name = "escape"
description = "Hostile path parameters."
"""
IMAGE = """
[image]
layers = 2
files = 4
bytes = 1000
"""
START = """
[[step]]
op = "start"
"""

#: (field as the error names it, the TOML that puts ${p} there); every op and table that names a path
FIELDS = [
    *(
        (f"step[1].{key}", f'{IMAGE}{START}[[step]]\nop = "{op}"\n{key} = "${{p}}"\n{extra}')
        for op, key, extra in [
            ("write", "path", "bytes = 10"),
            ("write", "glob", "bytes = 10"),
            ("append", "path", ""),
            ("overwrite", "path", ""),
            ("truncate", "path", "size = 0"),
            ("open_rdwr", "path", ""),
            ("read", "path", ""),
            ("read", "glob", ""),
            ("page_cache", "path", ""),
            ("stat", "path", ""),
            ("fsync", "path", ""),
            ("chmod", "path", "mode = 0o4777"),
            ("chown", "path", "uid = 0\ngid = 0"),
            ("unlink", "path", ""),
            ("unlink", "glob", ""),
            ("rename", "path", 'to = "b"'),
            ("rename", "to", 'path = "a"'),
            ("mkdir", "path", ""),
            ("readdir", "path", ""),
            ("volume", "path", 'kind = "tmpfs"'),
            ("expect", "path", 'sha256 = "' + "0" * 64 + '"'),
        ]
    ),
    ("image.file[0].path", f'{IMAGE}[[image.file]]\npath = "${{p}}"\nsize = 1\n{START}'),
    ("image.remove[0].path", f'{IMAGE}[[image.remove]]\npath = "${{p}}"\nlayer = 1\n{START}'),
    (
        "images[0].file[0].path",
        f'{IMAGE}[[images]]\nname = "app"\n[[images.file]]\npath = "${{p}}"\nsize = 1\n{START}',
    ),
    (
        "images[0].remove[0].path",
        f'{IMAGE}[[images]]\nname = "app"\nlayers = 2\n[[images.remove]]\npath = "${{p}}"\nlayer = 1\n{START}',
    ),
]
HOSTILE = ["../../../../x", "/abs/x", "a/../../x", "a/\\u0000b", ""]


def _write(tmp_path: Path, body: str, params: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(HEAD + params + body)
    return path


@pytest.mark.parametrize(("where", "body"), FIELDS, ids=[f[0] + ":" + f[1].split('op = "')[-1][:9] for f in FIELDS])
@pytest.mark.parametrize("value", HOSTILE)
def test_a_parameter_in_a_path_field_is_checked_once_substituted(
    tmp_path: Path, where: str, body: str, value: str
) -> None:
    path = _write(tmp_path, body, f'[params]\np = ["ok/x", "{value}"]\n')
    with pytest.raises(UserError) as err:
        load_scenario(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {where}: ") and "(parameter p)" in text and "\n" not in text
    shown = value.replace("\\u0000", "\x00")
    assert repr(shown) in text


@pytest.mark.parametrize(("where", "body"), FIELDS[:3] + FIELDS[-2:], ids=lambda v: str(v)[:20])
def test_a_listed_set_is_checked_too(tmp_path: Path, where: str, body: str) -> None:
    path = _write(tmp_path, body, '[[sets]]\np = "ok"\n[[sets]]\np = "/abs/x"\n')
    with pytest.raises(UserError, match=rf"^{path}: {where.replace('[', '.').replace(']', '.')}: .*'/abs/x'"):
        load_scenario(path)


@pytest.mark.parametrize("table", ["quick", "long"])
@pytest.mark.parametrize(("where", "body"), FIELDS[:3] + FIELDS[-2:], ids=lambda v: str(v)[:20])
def test_a_quick_or_long_value_is_checked_too(tmp_path: Path, where: str, body: str, table: str) -> None:
    """`[quick] params` replace [params]'s values under --quick, `[long] params` add to them under --long:
    a hostile value there is refused with the same one line as in [params]."""
    path = _write(tmp_path, body, f'[params]\np = ["ok"]\n[{table}]\nparams = {{ p = ["../../x"] }}\n')
    load_scenario(path)  # without --quick or --long the table's values are not used
    with pytest.raises(UserError) as err:
        load_scenario(path, quick=table == "quick", long=table == "long")
    why = "must be relative to the container root, without '..'"
    assert str(err.value) == f"{path}: {where}: {why}, got '../../x' (parameter p)"


@pytest.mark.parametrize("table", ["quick", "long"])
def test_the_cli_refuses_a_quick_or_long_value_with_exit_2_and_one_line(tmp_path: Path, table: str) -> None:
    path = _write(tmp_path, FIELDS[0][1], f'[params]\np = ["ok"]\n[{table}]\nparams = {{ p = ["../../x"] }}\n')
    args = ["run", str(path), "-d", "null", f"--{table}", "--work-root", str(tmp_path / "work")]
    r = CliRunner().invoke(main, [*args, "--results-dir", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    why = "must be relative to the container root, without '..'"
    assert [line for line in r.output.splitlines() if line.strip()] == [
        f"layerbench: error: {path}: step[1].path: {why}, got '../../x' (parameter p)"
    ]
    assert not (tmp_path / "o").exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize(("where", "body"), FIELDS, ids=[f[0] + ":" + f[1].split('op = "')[-1][:9] for f in FIELDS])
def test_a_param_option_is_checked_too(tmp_path: Path, where: str, body: str) -> None:
    path = _write(tmp_path, body, '[params]\np = ["ok"]\n')
    load_scenario(path)  # the file's own values are fine
    with pytest.raises(UserError) as err:
        resolve_scenarios((str(path),), {"p": ["../../../../x"]})
    assert str(err.value).startswith(f"{path}: {where}: ") and "'../../../../x' (parameter p)" in str(err.value)


def test_the_cli_refuses_before_any_cell_with_exit_2_and_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, FIELDS[0][1], '[params]\np = ["ok"]\n')
    work = tmp_path / "work"
    args = ["run", str(path), "-d", "null", "-p", "p=..", "--work-root", str(work)]
    args += ["--results-dir", str(tmp_path / "o")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    why = "must be relative to the container root, without '..'"
    assert lines == [f"layerbench: error: {path}: step[1].path: {why}, got '..' (parameter p)"]
    assert not (tmp_path / "o").exists() and not work.exists()  # refused before the work root is made


@pytest.mark.parametrize("kind", ["fifo", "missing", "device"])
def test_an_image_path_that_is_no_file_or_directory_is_refused_without_opening_it(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "img"
    if kind == "fifo":
        import os

        os.mkfifo(target)  # opening it for reading would block forever
    elif kind == "device":
        target.symlink_to("/dev/null")
    path = tmp_path / "s.toml"
    path.write_text(HEAD + '[params]\np = ["img"]\n[image]\nsource = "oci"\npath = "${p}"\n' + START)
    with pytest.raises(UserError) as err:
        load_scenario(path)
    want = "does not exist" if kind == "missing" else "is not a directory or a regular file"
    assert str(err.value).startswith(f"{path}: image.path: {target}") and want in str(err.value)


# -- memory bounds of a synthetic image and a write step (issue 20) ----------------------------------------

BOUNDS = [
    ("image.files", '[image]\nfiles = "${n}"\n', 1_000_001, "must be between 0 and 1,000,000"),
    ("image.sigma", '[image]\nsigma = "${n}"\n', 1000, "must be between 0 and 20"),
    ("image.depth", '[image]\ndepth = "${n}"\n', 10**9, "must be between 0 and 1,000"),
    ("image.layers", '[image]\nlayers = "${n}"\n', 501, "must be between 1 and 500"),
    ("images[0].files", '[image]\n[[images]]\nname = "app"\nfiles = "${n}"\n', 10**12, "must be between 0 and"),
    (
        "step[1].count",
        '[image]\n[[step]]\nop = "start"\n[[step]]\nop = "write"\npath = "f{i}"\nbytes = 1\ncount = "${n}"\n',
        10**10,
        "must be between 0 and 1,000,000",
    ),
]


@pytest.mark.parametrize(("where", "body", "value", "message"), BOUNDS, ids=[b[0] for b in BOUNDS])
@pytest.mark.parametrize("how", ["literal", "param", "--param"])
def test_huge_synthetic_sizes_are_one_line_before_anything_is_generated(
    tmp_path: Path, where: str, body: str, value: int, message: str, how: str
) -> None:
    """`files = 10**12` allocated an array of that many; a huge `sigma` overflowed the sizes; a huge
    `depth` or write `count` built paths or lists without end. Each is bounded, literal or parameter."""
    text = body if how != "literal" else body.replace('"${n}"', str(value))
    steps = START if "[[step]]" not in body else ""
    path = tmp_path / "s.toml"
    path.write_text(HEAD + ("[params]\nn = [1]\n" if how == "--param" else f"[params]\nn = [{value}]\n") + text + steps)
    with pytest.raises(UserError) as err:
        if how == "--param":
            resolve_scenarios((str(path),), {"n": [value]})
        else:
            load_scenario(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {where}: {message}") and f"got {value}" in text and "\n" not in text


def test_open_image_refuses_a_fifo_without_opening_it(tmp_path: Path) -> None:
    """The Python API (and a plugin) reach `open_image` without the scenario check: it checks the type too."""
    import os

    from layerbench.images.image_sources import open_image

    os.mkfifo(tmp_path / "img")
    for source in ("dir", "oci", "docker-archive"):
        with pytest.raises(UserError, match="needs a directory or a regular file"):
            open_image(source, tmp_path / "img")
