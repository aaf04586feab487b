"""File-step selection: the glob walker never follows a symlink; steps open regular files only."""

from __future__ import annotations

import errno
import glob
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from layerbench.driver import Driver
from layerbench.images.image import Image
from layerbench.run.backing import BackingStore, Usage
from layerbench.run.selection import glob_paths
from layerbench.run.steps import SampleState, run_step
from layerbench.scenario import Step

ROOT = os.geteuid() == 0


def tree(root: Path) -> Path:
    """A small ordinary tree: nested dirs, files, a hidden file and a hidden dir."""
    for d in ("etc", "usr/lib/x", "usr/share", ".hidden"):
        (root / d).mkdir(parents=True)
    for f in (
        "etc/hosts",
        "etc/app.conf",
        "usr/lib/x/a.so",
        "usr/lib/b.so",
        "usr/share/doc",
        ".hidden/f",
        ".env",
        "top.bin",
    ):
        (root / f).write_bytes(b"x" * 10)
    return root


PATTERNS = [
    "**",
    "*",
    "etc/*",
    "**/*.so",
    "usr/**",
    "usr/**/a.so",
    "usr/*/x/*",
    ".*",
    ".hidden/*",
    "nothing/*",
    "etc/hosts",
    "**/x/**",
    "*/lib/*.so",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_walker_matches_pythons_glob_on_an_ordinary_tree(pattern: str, tmp_path: Path) -> None:
    root = tree(tmp_path)
    expected = sorted(p.rstrip("/") for p in glob.glob(pattern, root_dir=root, recursive=True))
    assert glob_paths(str(root), pattern) == expected


def test_a_tree_of_symlink_loops_ends_at_once(tmp_path: Path) -> None:
    """`a -> .` and `b -> .`: glob.glob("**") would walk a/b/a/b/... until the path is too long."""
    root = tree(tmp_path)
    os.symlink(".", root / "a")
    os.symlink(".", root / "b")
    os.symlink("..", root / "usr" / "up")
    t0 = time.monotonic()
    found = glob_paths(str(root), "**")
    assert time.monotonic() - t0 < 5  # a hang detector: the walk is a few dozen entries
    assert {"a", "b", "usr/up"} <= set(found)  # listed (the selection then skips them), never entered
    assert not any(p.startswith(("a/", "b/", "usr/up/")) for p in found)
    assert glob_paths(str(root), "a/*") == []  # not through a symlinked directory either
    assert glob_paths(str(root), "**/hosts") == ["etc/hosts"]


def test_a_symlink_to_a_directory_outside_is_not_entered(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    os.symlink(str(outside), root / "abs")
    os.symlink("../outside", root / "rel")
    assert glob_paths(str(root), "**") == ["abs", "rel"]
    assert glob_paths(str(root), "*/secret") == []


# -- selection and opening, through run_step ---------------------------------------------------


class _Image:
    def __init__(self, files: list[str]) -> None:
        self.files = files

    def file_paths(self) -> list[str]:
        return list(self.files)


def _state(root: Path, files: list[str] | None = None) -> SampleState:
    # selection reads only the container roots and the image's file list: no driver or store
    state = SampleState(
        driver=cast(Driver, None),
        image=cast(Image, _Image(files or [])),
        top="",
        store=cast(BackingStore, None),
        baseline=cast(Usage, None),
        baseline_walk=0,
        prefix="s0",
    )
    state.containers, state.roots = ["c0"], {"c0": root}
    return state


def _run(
    state: SampleState, op: str, allow: tuple[str, ...] = (), **args: Any
) -> tuple[dict[str, int], dict[str, int]]:
    recorded: dict[str, int] = {}
    outcomes: dict[str, int] = {}

    def outcome(label: str, name: str) -> None:
        outcomes[name] = outcomes.get(name, 0) + 1

    run_step(
        state,
        Step(op=op, args=args, measure="t_ns", allow_errors=allow, label=f"step[0] {op}"),
        recorded.__setitem__,
        outcome,
    )
    return recorded, outcomes


def hostile(root: Path) -> Path:
    """A regular file among a fifo, a socket, a symlink loop, a symlink to a file and a directory."""
    (root / "dev").mkdir()
    (root / "dev" / "regular").write_bytes(b"0123456789")
    os.mkfifo(root / "dev" / "fifo")
    os.symlink(".", root / "dev" / "loop")
    os.symlink("regular", root / "dev" / "link")
    (root / "dev" / "dir").mkdir()
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "dev" / "sock"))
    return root


@pytest.mark.parametrize("op", ["read", "overwrite", "append", "open_rdwr", "fsync", "write"])
def test_a_glob_opens_only_the_regular_file_and_says_what_it_skipped(op: str, tmp_path: Path) -> None:
    root = hostile(tmp_path)
    required: dict[str, Any] = {"bytes": 1} if op == "write" else {}  # a scenario's write names its size
    recorded, outcomes = _run(_state(root), op, glob="dev/*", **required)
    assert "t_ns" in recorded
    assert outcomes == {"skipped 1 directory": 1, "skipped 1 fifo": 1, "skipped 1 socket": 1, "skipped 2 symlinks": 1}
    assert os.path.islink(root / "dev" / "link") and os.readlink(root / "dev" / "link") == "regular"
    if op in ("overwrite", "append", "write"):
        assert (root / "dev" / "regular").read_bytes() != b"0123456789"


@pytest.mark.parametrize("path", ["dev/fifo", "dev/link", "dev/loop/regular", "dev/dir"])
def test_a_path_that_is_not_a_regular_file_is_one_clear_error(path: str, tmp_path: Path) -> None:
    root = hostile(tmp_path)
    with pytest.raises(FileNotFoundError) as exc:
        _run(_state(root), "read", path=path)
    text = str(exc.value)
    assert "\n" not in text and f"path {path!r} selects no regular file" in text
    assert (root / "dev" / "regular").read_bytes() == b"0123456789"


def test_nothing_regular_selected_can_be_an_allowed_outcome(tmp_path: Path) -> None:
    root = hostile(tmp_path)
    _, outcomes = _run(_state(root), "read", allow=("ENOENT",), path="dev/fifo")
    assert outcomes == {"skipped 1 fifo": 1, "ENOENT": 1}


def test_a_missing_path_is_still_created_by_write_and_enoent_elsewhere(tmp_path: Path) -> None:
    root = hostile(tmp_path)
    _run(_state(root), "write", path="new/dir/f{i}", count=2, bytes=3)
    assert (root / "new" / "dir" / "f1").read_bytes() == b"xxx"
    with pytest.raises(FileNotFoundError):
        _run(_state(root), "read", path="gone")


def test_fraction_skips_what_a_later_layer_turned_into_a_symlink(tmp_path: Path) -> None:
    root = hostile(tmp_path)
    _, outcomes = _run(_state(root, ["dev/regular", "dev/link", "dev/fifo"]), "chmod", fraction=1.0, mode=0o600)
    assert outcomes == {"skipped 1 fifo": 1, "skipped 1 symlink": 1}
    assert (root / "dev" / "regular").stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(not ROOT, reason="mknod of a character device needs root")
def test_a_char_device_is_skipped_and_never_opened(tmp_path: Path) -> None:
    root = tmp_path
    os.mknod(root / "zero", 0o666 | 0o020000, os.makedev(1, 5))  # /dev/zero: a read would never end
    (root / "f").write_bytes(b"f")
    _, outcomes = _run(_state(root), "read", glob="*")
    assert outcomes == {"skipped 1 char device": 1}


def test_an_entry_swapped_after_selection_is_refused_on_open(tmp_path: Path) -> None:
    """O_NOFOLLOW and the type check on the fd: a fifo put where a file was selected fails
    at once (no wait for a writer), a symlink with ELOOP."""
    from layerbench.run import steps

    os.mkfifo(tmp_path / "fifo")
    os.symlink("fifo", tmp_path / "link")
    dfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as exc:
            steps._open((dfd, "fifo"), os.O_RDONLY)
        assert exc.value.errno == errno.EINVAL and "a fifo, not a regular file" in str(exc.value)
        with pytest.raises(OSError) as exc:
            steps._open((dfd, "link"), os.O_RDONLY)
        assert exc.value.errno == errno.ELOOP
    finally:
        os.close(dfd)
