"""Each op's own step checks live on its record in `ops.OPS` (issue 22): scenario.py names no op."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from layerbench import scenario
from layerbench.errors import UserError
from layerbench.kernel.netshape import parse_link
from layerbench.ops import OPS, Checker
from layerbench.scenario import load_scenario


def _op_literals(source: str) -> list[str]:
    """Where `source` picks out an op by its name: a comparison against a string naming an op
    (`op == "write"`, `op in ("start", "run")`, `ops in (["build"], ["pull"])`), a lookup `OPS["write"]`,
    or a `case "write":`; as `line: code`."""
    names = set(OPS)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            parts: list[ast.AST] = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "OPS":
            parts = [node.slice]
        elif isinstance(node, ast.MatchValue):
            parts = [node.value]
        else:
            continue
        if any(
            isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names
            for part in parts
            for n in ast.walk(part)
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_op_name_finder_sees_the_old_rules() -> None:
    old = (
        'if op in ("start", "run") and "image" in step: pass\n'
        'if "count" in step and op == "write": pass\n'
        'if ops in (["build"], ["pull"]): pass\n'
        'spec = OPS["expect"]\n'
        'match op:\n    case "pull": pass\n'
    )
    assert len(_op_literals(old)) == 5
    # the same words as other things are no op's name: [[image.remove]], a source, a field
    fine = 'for kind in ("file", "remove"): pass\nif source == "dir": pass\nif key in ("path", "to"): pass\n'
    assert _op_literals(fine) == []


def test_scenario_names_no_op() -> None:
    """An op's own checks go on its record in ops.py (`rules`, `path_rules`), not in `_validate_step`."""
    path = Path(scenario.__file__)
    found = _op_literals(path.read_text())
    assert not found, f"{path.name} picks out ops by name (move the rule to the op in ops.py): " + "; ".join(found)


HEAD = 'name = "t"\ndescription = "d"\n[image]\nlayers = 1\nfiles = 2\nbytes = 100\n'


def _load(tmp_path: Path, step: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(HEAD + "[[step]]\n" + step + "\n")
    load_scenario(path)
    return path


def test_an_ops_rule_is_found_through_the_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule put on an op's record is run for that op's steps, and for no other op's."""

    def no_glob(c: Checker, step: dict[str, Any], where: str) -> None:
        if "glob" in step:
            raise c.fail(f"{where}glob", "stat takes no glob here")

    _load(tmp_path, 'op = "stat"\nglob = "*"')
    monkeypatch.setitem(OPS, "stat", dataclasses.replace(OPS["stat"], rules=(no_glob,)))
    with pytest.raises(UserError, match=r"s\.toml: step\[0\]\.glob: stat takes no glob here$"):
        _load(tmp_path, 'op = "stat"\nglob = "*"')
    _load(tmp_path, 'op = "fsync"\nglob = "*"')


def test_a_bad_value_gets_its_ops_own_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pull's link and write's count are checked by the rules on their records, with their messages."""
    with pytest.raises(UserError) as shaped:
        parse_link("bogus")
    with pytest.raises(UserError) as exc:
        _load(tmp_path, 'op = "pull"\nlink = "bogus"')
    assert str(exc.value) == f"{tmp_path / 's.toml'}: step[0].link: {shaped.value}"
    with pytest.raises(UserError, match=r"step\[0\]\.path: with count, the path must hold \{i\}"):
        _load(tmp_path, 'op = "write"\npath = "a"\nbytes = 1\ncount = 2')
    # without the rules on their records, nothing else refuses them
    monkeypatch.setitem(OPS, "pull", dataclasses.replace(OPS["pull"], rules=()))
    monkeypatch.setitem(OPS, "write", dataclasses.replace(OPS["write"], path_rules=()))
    _load(tmp_path, 'op = "pull"\nlink = "bogus"')
    _load(tmp_path, 'op = "write"\npath = "a"\nbytes = 1\ncount = 2')
