from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from layerbench.errors import UserError
from layerbench.kernel.safety import MARKER, prepare_work_root, remove_tree
from layerbench.run.ledger import Ledger, release, release_abandoned


@pytest.mark.parametrize("bad", ["/", "/var/tmp", "/tmp", "~"])
def test_system_and_home_work_roots_are_refused(bad: str) -> None:
    with pytest.raises(UserError, match="refusing a system directory or the home directory"):
        prepare_work_root(Path(os.path.expanduser(bad)))


@pytest.mark.parametrize(
    "bad",
    [
        "/etc",
        "/etc/lb-x",
        "/usr/lib/lb-x",
        "/boot/lb-x",
        "/bin/lb-x",
        "/sbin/lb-x",
        "/lib/lb-x",
        "/lib64/lb-x",
        "/proc/lb-x",
        "/sys/lb-x",
        "/dev/shm/lb-x",
        "/run/lb-x",
        "/var/lib/lb-x",
    ],
)
def test_anything_under_a_system_directory_is_refused_and_nothing_is_made(bad: str) -> None:
    path = Path(bad) / f"w{os.getpid()}"
    with pytest.raises(UserError, match=r"^--work-root .*: refusing a directory under the system directory /"):
        prepare_work_root(path)
    assert [p for p in (path, path.parent) if p != Path("/etc") and os.path.lexists(p)] == []  # nothing made


def test_a_symlink_into_a_system_directory_is_resolved_first(tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "innocent")
    with pytest.raises(UserError, match=r"\(/etc/lb-x\): refusing a directory under the system directory /etc"):
        prepare_work_root(tmp_path / "innocent" / "lb-x")
    assert not os.path.lexists("/etc/lb-x")


def test_a_work_root_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot make it ours: Not a directory"):
        prepare_work_root(tmp_path / "file" / "w")


def test_a_foreign_non_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "theirs.txt").write_text("keep me")
    with pytest.raises(UserError, match="non-empty directory layerbench did not make"):
        prepare_work_root(tmp_path)
    assert (tmp_path / "theirs.txt").read_text() == "keep me"


def test_a_new_work_root_is_0700_and_marked(tmp_path: Path) -> None:
    root = prepare_work_root(tmp_path / "w")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and (root / MARKER).exists()
    (root / "run-x").mkdir()
    assert prepare_work_root(root) == root  # ours, so non-empty is fine


def test_remove_tree_does_not_follow_symlinks_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    os.symlink(outside, tree / "sub" / "link")
    remove_tree(tree)
    assert not tree.exists() and (outside / "precious").read_text() == "x"


def test_ledger_releases_in_reverse_and_only_what_it_names(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    ledger = Ledger(run_dir / "ledger.jsonl").open()
    ledger.made("dir", run_dir / "cell")
    (run_dir / "cell").mkdir()
    ledger.made("file", run_dir / "cell" / "img")
    (run_dir / "cell" / "img").write_text("x")
    ledger.made("file", run_dir / "cell" / "gone")  # recorded, never made: nothing to do
    ledger.close()
    neighbour = tmp_path / "not-recorded"
    neighbour.write_text("y")
    actions = release(run_dir / "ledger.jsonl")
    assert actions == [f"removed {run_dir / 'cell' / 'img'}", f"removed {run_dir / 'cell'}"]
    assert release(run_dir / "ledger.jsonl") == []  # idempotent
    _, live = release_abandoned(tmp_path)
    assert live == [] and neighbour.read_text() == "y" and not run_dir.exists()


def test_a_top_directory_that_only_starts_with_lib_is_not_a_system_directory() -> None:
    from layerbench.kernel.safety import _system_tree

    assert _system_tree("/library/lb-x") is None and _system_tree("/libx32/lb-x") == "/libx32"
