"""Every file operation of a step stays inside the container's root by construction (issue 20).

These call the step functions directly, past the scenario check, with the paths the
attack used (`..` above the root, absolute paths) and with symlinks planted inside the
root that point at a host directory. A sentinel directory beside the root must stay
byte-identical, and nothing may appear beside it.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any, cast

import pytest

from layerbench.driver import Driver, LayerFormat
from layerbench.images.image import FileSpec, Image, apply_layer, write_whiteout
from layerbench.kernel import confined
from layerbench.kernel.confined import Escape, Parents, Root
from layerbench.run.backing import BackingStore, Usage
from layerbench.run.steps import SampleState, run_step
from layerbench.scenario import Step

from .checks import snapshot

ROOT = os.geteuid() == 0


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(container root, sentinel): the root holds a file, a directory and three symlinks to the sentinel."""
    root, sentinel = tmp_path / "root", tmp_path / "sentinel"
    (root / "dir").mkdir(parents=True)
    (root / "ok").write_bytes(b"ok")
    sentinel.mkdir()
    (sentinel / "file").write_bytes(b"host data")
    (sentinel / "sub").mkdir()
    os.symlink(str(sentinel), root / "link")  # absolute: to the host directory
    os.symlink("../sentinel", root / "rel")  # relative, up out of the root
    os.symlink(str(sentinel / "file"), root / "flink")  # to the host file itself
    return root, sentinel


#: the paths of the attack: `..` above the root, absolute, and through the planted symlinks
HOSTILE = [
    "../sentinel/file",
    "../sentinel/new",
    "dir/../../sentinel/file",
    "link/file",
    "link/new",
    "rel/file",
    "rel/sub",
    "flink",
    "ABS/file",
    "ABS/new",
]

#: every op that names a path, with the fields it needs besides it
OPS: dict[str, dict[str, Any]] = {
    "write": {"bytes": 3},
    "append": {"bytes": 3},
    "overwrite": {"bytes": 3},
    "truncate": {"size": 0},
    "open_rdwr": {},
    "read": {},
    "page_cache": {},
    "stat": {},
    "fsync": {},
    "chmod": {"mode": 0o4777},
    "chown": {"uid": 4321, "gid": 4321},
    "unlink": {},
    "mkdir": {},
    "readdir": {},
    "expect": {"sha256": "0" * 64},
}


def _state(root: Path, files: list[str] | None = None, store: Path | None = None) -> SampleState:
    image = type("I", (), {"file_paths": lambda self: list(files or [])})()
    state = SampleState(
        driver=cast(Driver, None),
        image=cast(Image, image),
        top="",
        store=cast(BackingStore, type("S", (), {"mountpoint": store})()),
        baseline=cast(Usage, None),
        baseline_walk=0,
        prefix="s0",
    )
    state.containers, state.roots = ["c0"], {"c0": root}
    return state


def _run(state: SampleState, op: str, **args: Any) -> None:
    run_step(state, Step(op, args, "t_ns", (), f"step[0] {op}"), lambda m, v: None, lambda label, o: None)


def _path(value: str, sentinel: Path) -> str:
    return value.replace("ABS", str(sentinel.parent))  # ABS/x: an absolute path to the tmp dir


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("op", sorted(OPS))
def test_no_step_reaches_outside_the_root_whatever_the_path(
    op: str, hostile: str, box: tuple[Path, Path], tmp_path: Path
) -> None:
    root, sentinel = box
    before, beside = snapshot(sentinel), sorted(os.listdir(tmp_path))
    with pytest.raises((Escape, OSError)):
        _run(_state(root), op, path=_path(hostile, sentinel), **OPS[op])
    assert snapshot(sentinel) == before
    assert sorted(os.listdir(tmp_path)) == beside


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("field", ["path", "to"])
def test_rename_moves_nothing_in_or_out(field: str, hostile: str, box: tuple[Path, Path], tmp_path: Path) -> None:
    root, sentinel = box
    before = snapshot(sentinel)
    args = {"path": "ok", "to": "ok2", field: _path(hostile, sentinel)}
    if hostile == "flink":  # the symlink itself is the container's own entry: renamed as a link, never followed
        _run(_state(root), "rename", **args)
    else:
        with pytest.raises((Escape, OSError)):
            _run(_state(root), "rename", **args)
        assert (root / "ok").read_bytes() == b"ok"
    assert snapshot(sentinel) == before


@pytest.mark.parametrize("op", ["read", "chmod", "unlink", "write"])
@pytest.mark.parametrize("pattern", ["../sentinel/*", "link/*", "rel/*", "*/file", "**"])
def test_a_glob_never_leaves_the_root(op: str, pattern: str, box: tuple[Path, Path]) -> None:
    root, sentinel = box
    before = snapshot(sentinel)
    try:
        _run(_state(root), op, glob=pattern, **OPS[op])
    except (Escape, OSError):
        pass
    assert snapshot(sentinel) == before


@pytest.mark.parametrize("op", ["read", "chmod", "unlink", "truncate"])
def test_an_image_file_list_naming_paths_outside_is_refused(op: str, box: tuple[Path, Path]) -> None:
    """`fraction` picks from the image's file list: a hostile list is confined too."""
    root, sentinel = box
    before = snapshot(sentinel)
    with pytest.raises((Escape, OSError)):
        _run(_state(root, ["../sentinel/file", "link/file", str(sentinel / "file")]), op, fraction=1.0, **OPS[op])
    assert snapshot(sentinel) == before


def test_the_ops_still_work_inside(box: tuple[Path, Path]) -> None:
    """The same calls on honest paths do what they say (the refusals above are not a broken op)."""
    root, _ = box
    state = _state(root)
    _run(state, "write", path="dir/new/f{i}", count=2, bytes=5)
    assert (root / "dir/new/f1").read_bytes() == b"xxxxx"
    _run(state, "chmod", path="dir/new/f0", mode=0o640)
    assert (root / "dir/new/f0").stat().st_mode & 0o7777 == 0o640
    _run(state, "truncate", path="dir/new/f0", size=2)
    assert (root / "dir/new/f0").stat().st_size == 2
    _run(state, "rename", path="dir/new/f0", to="dir/moved")
    assert (root / "dir/moved").exists() and not (root / "dir/new/f0").exists()
    _run(state, "mkdir", path="dir/made")
    assert (root / "dir/made").is_dir()
    _run(state, "unlink", path="dir/moved")
    assert not (root / "dir/moved").exists()
    _run(state, "expect", path="ok", sha256=hashlib.sha256(b"ok").hexdigest())
    _run(state, "overwrite", path="ok", bytes=1, offset=0)
    assert (root / "ok").read_bytes() == b"xk"


def test_a_large_write_is_written_from_a_bounded_buffer(
    box: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`write bytes = N` holds at most WRITE_CHUNK in memory, whatever N: made here small to see it loop."""
    from layerbench.run import steps

    root, _ = box
    made: list[int] = []
    real = steps._buffer
    monkeypatch.setattr(steps, "WRITE_CHUNK", 4096)

    def buffer(size: int) -> memoryview:
        made.append(len(view := real(size)))
        return view

    monkeypatch.setattr(steps, "_buffer", buffer)
    _run(_state(root), "write", path="big", bytes=10 * 4096 + 7)
    _run(_state(root), "overwrite", path="big", bytes=3 * 4096, offset=5)
    assert (root / "big").stat().st_size == 10 * 4096 + 7 and set((root / "big").read_bytes()) == {ord("x")}
    assert made == [4096, 4096]


@pytest.mark.parametrize("hostile", ["../sentinel/new", "link/new", "rel/new", "../sentinel", "link"])
@pytest.mark.parametrize("fmt", list(LayerFormat))
def test_image_files_and_removals_stay_in_the_layer(
    hostile: str, fmt: LayerFormat, box: tuple[Path, Path], tmp_path: Path
) -> None:
    """`[[image.file]]` and `[[image.remove]]` of a synthetic image are written beneath the layer's root."""
    root, sentinel = box
    before, beside = snapshot(sentinel), sorted(os.listdir(tmp_path))
    with pytest.raises((Escape, OSError)):
        apply_layer(root, (FileSpec(hostile + "/f" if hostile in ("link",) else hostile, 4, 1),), fmt)
    if hostile in ("../sentinel", "../sentinel/new"):
        with pytest.raises((Escape, OSError)):
            write_whiteout(root, hostile, fmt)
    else:
        try:  # a symlink named itself is removed as a symlink (never followed); through it, refused
            write_whiteout(root, hostile + "/file" if hostile == "link" else hostile, fmt)
        except (Escape, OSError):
            pass
    assert snapshot(sentinel) == before
    assert sorted(os.listdir(tmp_path)) == beside


def test_openat2_refuses_every_way_out(box: tuple[Path, Path]) -> None:
    root, sentinel = box
    with Root(root) as r, Parents(r) as parents:
        for bad in ("..", "../sentinel", "/etc", "dir/../..", "a\0b"):
            with pytest.raises(Escape):
                parents.at(bad + "/x")
        for through in ("link/file", "rel/file", "flink"):
            with pytest.raises(OSError):  # ELOOP: no symlink on the way, nor at the end
                os.close(r.open(through, os.O_RDONLY))
        # the kernel's own refusal, without the lexical check in front of it
        for bad in ("../sentinel/file", "dir/../../sentinel/file", str(sentinel / "file")):
            with pytest.raises(Escape):  # EXDEV from openat2(RESOLVE_BENEATH)
                confined.openat2(r.fd, bad, os.O_RDONLY)
        with pytest.raises(OSError) as err:
            confined.openat2(r.fd, "link/file", os.O_RDONLY)
        assert err.value.errno == errno.ELOOP
        fd = confined.openat2(r.fd, "dir/../ok", os.O_RDONLY)  # a `..` that stays below is fine
        assert os.read(fd, 9) == b"ok"
        os.close(fd)
    pfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):  # EOPNOTSUPP: fchmodat2 never follows the symlink to the host file
            confined.chmod(pfd, "flink", 0o4777)
    finally:
        os.close(pfd)
    assert (sentinel / "file").stat().st_mode & 0o7777 == 0o644


@pytest.mark.mounts
@pytest.mark.skipif(not ROOT, reason="mounting a volume needs root")
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
@pytest.mark.parametrize("hostile", ["../sentinel", "link", "link/sub", "rel/sub", "ABS", "dir/../../sentinel"])
def test_a_volume_is_never_mounted_outside_the_root(
    kind: str, hostile: str, box: tuple[Path, Path], tmp_path: Path
) -> None:

    root, sentinel = box
    store = tmp_path / "store"
    store.mkdir()
    before = snapshot(sentinel)
    state = _state(root, store=store)
    try:
        with pytest.raises((Escape, OSError)):
            _run(state, "volume", path=_path(hostile, sentinel), kind=kind, populate=True)
    finally:
        state.release_volumes()
    assert snapshot(sentinel) == before
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()


@pytest.mark.mounts
@pytest.mark.skipif(not ROOT, reason="mounting a volume needs root")
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_a_volume_inside_lands_at_its_path_and_is_released(kind: str, box: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = box
    store = tmp_path / "store"
    store.mkdir()
    (root / "dir" / "seed").write_bytes(b"seed")
    state = _state(root, store=store)
    try:
        _run(state, "volume", path="dir", kind=kind, populate=True)
        assert state.volumes == [str(root / "dir")]
        with open("/proc/self/mountinfo") as f:
            assert f" {root / 'dir'} " in f.read()
        assert (root / "dir" / "seed").read_bytes() == b"seed"  # populated from the image's content
    finally:
        state.release_volumes()
    with open("/proc/self/mountinfo") as f:
        assert str(root) not in f.read()
