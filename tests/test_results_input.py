"""Results files are untrusted input too (issue 20): `report DIR`, `compare` and `claims` read only
regular files of bounded size, never blocking on a fifo or reading a device without end."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.analysis import results
from layerbench.cli import main
from layerbench.errors import UserError

DATA = Path(__file__).parent / "data"


def _hostile(where: Path, kind: str) -> Path:
    """A `*.json` in `where` that is a fifo (an open for reading would wait for a writer forever), a
    symlink to /dev/zero (a read never ends), or a sparse file over the size limit."""
    path = where / "evil.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        with open(path, "wb") as f:
            f.truncate(results.MAX_RESULTS_BYTES + 1)
    return path


KINDS = ["fifo", "zero", "directory", "huge"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("verb", ["report", "claims", "compare-old", "compare-new"])
def test_a_hostile_results_file_is_one_line_and_exit_2(tmp_path: Path, kind: str, verb: str) -> None:
    shutil.copy(DATA / "null.json", tmp_path / "good.json")
    evil = _hostile(tmp_path, kind)
    args = {
        "report": ["report", str(tmp_path)],  # the directory: every *.json under it
        "claims": ["claims", str(evil)],
        "compare-old": ["compare", str(evil), str(tmp_path / "good.json")],
        "compare-new": ["compare", str(tmp_path / "good.json"), str(evil)],
    }[verb]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"layerbench: error: {evil}: "), lines
    want = "over the limit" if kind == "huge" else "not a regular file"
    assert want in lines[0]


def test_a_symlink_to_a_good_results_file_still_reads(tmp_path: Path) -> None:
    (tmp_path / "link.json").symlink_to(DATA / "null.json")
    assert results.read(tmp_path / "link.json")["schema_version"] == results.read(DATA / "null.json")["schema_version"]


def test_deeply_nested_json_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match=rf"^{path}: not a readable results file"):
        results.read(path)


def test_a_directory_scan_does_not_follow_a_symlinked_directory(tmp_path: Path) -> None:
    """`report DIR` reads the files under DIR; a directory link inside it (to anywhere) is not walked."""
    shutil.copy(DATA / "null.json", tmp_path / "good.json")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    _hostile(elsewhere, "fifo")  # read, it would be a one-line error: it is never reached
    (tmp_path / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert results.result_paths(tmp_path) == [tmp_path / "good.json"]
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output


def test_saving_over_a_symlink_replaces_the_link_and_leaves_its_target(tmp_path: Path) -> None:
    """A results path is written by rename, never through a link: the link's target keeps its bytes."""
    target = tmp_path / "target.json"
    target.write_bytes(b"theirs")
    (tmp_path / "run.json").symlink_to(target)
    results.save(results.read(DATA / "null.json"), tmp_path / "run.json")
    assert target.read_bytes() == b"theirs"
    assert not (tmp_path / "run.json").is_symlink() and results.read(tmp_path / "run.json")["schema_version"]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400, "-" + "9" * 320])
@pytest.mark.parametrize("verb", ["report", "compare"])
def test_a_sample_no_float_holds_is_one_line_and_exit_2(tmp_path: Path, number: str, verb: str) -> None:
    """JSON has no NaN or Infinity, but `1e400` parses as inf and a 400-digit integer overflows every statistic
    (a traceback): both are refused as the file is read, in one line naming it."""
    good = (DATA / "null.json").read_text()
    first = good.index('"samples": [') + len('"samples": [')
    evil = tmp_path / "evil.json"
    evil.write_text(good[:first] + number + ", " + good[first:])
    args = ["report", str(evil), "-f", "md"] if verb == "report" else ["compare", str(DATA / "null.json"), str(evil)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"layerbench: error: {evil}: not a readable results file"), lines
