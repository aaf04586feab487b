"""A work root someone else controls (issue 20): a squatted work root with a planted ledger, a
run or cell directory swapped for a symlink. Nothing outside the work root is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbench.errors import UserError
from layerbench.kernel import mountinfo, syscalls
from layerbench.kernel.safety import MARKER, make_dir, prepare_work_root
from layerbench.run.backing import BackingStore
from layerbench.run.ledger import LEDGER_NAME, release, release_abandoned

from ..conftest import ROOT

pytestmark = [pytest.mark.mounts, pytest.mark.skipif(not ROOT, reason="the attacks are on root's runs")]
LAYERBENCH = [sys.executable, "-m", "layerbench"]
NOBODY = 65534


class Outside:
    """What an attacker's ledger names outside the work root: a tmpfs, a loop device, root's file and directory."""

    def __init__(self, base: Path) -> None:
        self.tmpfs, self.file, self.dir, self.img = (
            base / "tmpfs",
            base / "precious",
            base / "precious-dir",
            base / "img",
        )
        self.tmpfs.mkdir()
        syscalls.mount("tmpfs", str(self.tmpfs), "tmpfs", 0, "size=1m")
        self.file.write_text("root's")
        self.dir.mkdir()
        (self.dir / "inside").write_text("root's too")
        self.img.write_bytes(b"\0" * (1 << 20))
        self.loop = subprocess.run(
            ["losetup", "--find", "--show", str(self.img)], capture_output=True, text=True, check=True
        ).stdout.strip()

    def entries(self) -> list[tuple[str, str]]:
        return [("mount", str(self.tmpfs)), ("loop", str(self.img)), ("file", str(self.file)), ("dir", str(self.dir))]

    def untouched(self) -> bool:
        loops = subprocess.run(["losetup", "-j", str(self.img)], capture_output=True, text=True).stdout
        return (
            mountinfo.points_below(str(self.tmpfs)) == [str(self.tmpfs)]
            and self.loop in loops
            and self.file.read_text() == "root's"
            and (self.dir / "inside").read_text() == "root's too"
        )

    def close(self) -> None:
        subprocess.run(["losetup", "-d", self.loop], capture_output=True)
        syscalls.unmount_below(str(self.tmpfs), include_root=True)


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Outside]:
    base = tmp_path / "outside"
    base.mkdir()
    o = Outside(base)
    try:
        yield o
    finally:
        o.close()


def _plant(run_dir: Path, entries: list[tuple[str, str]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"op": "run", "pid": 1}] + [{"op": "make", "kind": k, "path": p} for k, p in entries]
    (run_dir / LEDGER_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.mark.parametrize("squat", ["chown", "chmod"])
def test_cleanup_refuses_a_squatted_work_root_with_a_planted_ledger(
    tmp_path: Path, outside: Outside, squat: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / MARKER).touch()
    _plant(work / "run-planted", outside.entries())
    if squat == "chown":  # an unprivileged user made the work root first
        for path in (work, work / "run-planted", work / "run-planted" / LEDGER_NAME):
            os.chown(path, NOBODY, NOBODY)
    else:
        os.chmod(work, 0o777)
    out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert out.returncode == 2, out
    (line,) = out.stderr.splitlines()
    why = "owned by uid 65534, not root" if squat == "chown" else "writable by group or others (mode 0777)"
    assert line == (
        f"layerbench: error: --work-root {work}: {work} is {why}: a work root and what it holds must be root's alone; "
        "remove it (after checking what it holds) or use another"
    )
    assert outside.untouched() and (work / "run-planted" / LEDGER_NAME).exists()
    # and a run refuses it too, before making anything in it
    with pytest.raises(UserError, match=why.replace("(", r"\(").replace(")", r"\)")):
        prepare_work_root(work)
    assert sorted(os.listdir(work)) == [MARKER, "run-planted"]


def test_a_squatted_run_directory_or_ledger_inside_roots_work_root_is_refused(tmp_path: Path, outside: Outside) -> None:
    work = prepare_work_root(tmp_path / "work")
    _plant(work / "run-planted", outside.entries())
    os.chown(work / "run-planted" / LEDGER_NAME, NOBODY, NOBODY)
    out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert out.returncode == 2 and f"{work / 'run-planted' / LEDGER_NAME} is owned by uid 65534" in out.stderr
    with pytest.raises(UserError, match="owned by uid 65534, not root; its ledger is not read"):
        release(work / "run-planted" / LEDGER_NAME)
    assert outside.untouched()


def test_a_ledger_naming_things_outside_its_run_directory_is_skipped_entry_by_entry(
    tmp_path: Path, outside: Outside
) -> None:
    work = prepare_work_root(tmp_path / "work")
    run_dir = work / "run-planted"
    os.symlink(outside.dir, work / "link")  # inside the work root, pointing out
    own = run_dir / "own"
    entries = [
        *outside.entries(),
        ("dir", f"{run_dir}/../../outside/precious-dir"),  # '..' back out
        ("file", f"{work}/link/inside"),  # through a symlink in the work root
        ("dir", str(run_dir)),  # the run directory itself
        ("file", str(own)),  # the one thing the run made
    ]
    _plant(run_dir, entries)
    own.write_text("x")
    os.chmod(run_dir, 0o700)
    out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"removed {own}"
    assert sorted(lines[1:]) == sorted(f"skipped {k} {p}: outside its run directory {run_dir}" for k, p in entries[:-1])
    assert outside.untouched() and not own.exists()
    assert (run_dir / LEDGER_NAME).exists()  # what it could not release stays named


def test_a_symlink_planted_where_the_backing_file_goes_is_neither_truncated_nor_formatted(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's data" * 1000)
    cell = tmp_path / "run-x" / "cell1"
    cell.mkdir(parents=True)
    os.symlink(victim, cell / "backing.ext4.img")
    store = BackingStore(cell, "ext4", 64 << 20)
    with (
        pytest.raises(UserError, match=r"backing.ext4.img: already there; a store's backing file is always new"),
        store,
    ):
        pass
    assert victim.read_bytes() == b"root's data" * 1000
    assert mountinfo.points_below(str(tmp_path)) == []
    assert subprocess.run(["losetup", "-j", str(victim)], capture_output=True, text=True).stdout == ""
    assert os.path.islink(cell / "backing.ext4.img")  # the planted link is not the store's to remove


@pytest.mark.parametrize("swapped", ["cell", "run"])
def test_a_run_or_cell_directory_swapped_for_a_symlink_is_refused(tmp_path: Path, swapped: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "backing.ext4.img").write_bytes(b"root's image")
    run_dir = tmp_path / "run-x"
    if swapped == "run":
        os.symlink(elsewhere, run_dir)
        with pytest.raises(UserError, match=rf"^{run_dir}: a symlink \(to {elsewhere}\); refusing to work in it$"):
            make_dir(run_dir / "cell1")
        cell = run_dir / "cell1"
    else:
        run_dir.mkdir()
        cell = run_dir / "cell1"
        os.symlink(elsewhere, cell)
    with pytest.raises(UserError, match=f"^({cell}|{run_dir}): a symlink"), BackingStore(cell, "ext4", 64 << 20):
        pass
    assert os.listdir(elsewhere) == ["backing.ext4.img"]
    assert (elsewhere / "backing.ext4.img").read_bytes() == b"root's image"
    assert mountinfo.points_below(str(tmp_path)) == []


def test_work_roots_under_a_directory_another_user_can_swap_are_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UserError, match=rf"{theirs} is owned by uid 65534: another user could swap it"):
        prepare_work_root(theirs / "work")
    assert os.listdir(theirs) == []
    open_dir_ = tmp_path / "open"
    open_dir_.mkdir()
    os.chmod(open_dir_, 0o777)  # without the sticky bit /tmp has
    with pytest.raises(UserError, match=r"writable by group or others without the sticky bit \(mode 0777\)"):
        prepare_work_root(open_dir_ / "work")
    os.chmod(open_dir_, 0o1777)
    assert prepare_work_root(open_dir_ / "work") == open_dir_ / "work"


def test_a_directory_inside_the_work_root_another_user_owns_is_refused(tmp_path: Path) -> None:
    work = prepare_work_root(tmp_path / "work")
    (work / "oci-cache" / "layout").mkdir(parents=True)
    os.chown(work / "oci-cache" / "layout", NOBODY, NOBODY)
    with pytest.raises(UserError, match=rf"{work}/oci-cache/layout is owned by uid 65534"):
        prepare_work_root(work)
    with pytest.raises(UserError, match="owned by uid 65534"):
        release_abandoned(work)
