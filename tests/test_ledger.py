"""The ledger: what a run made is written down first, and a dead run's leftovers are released from it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerbench.drivers._containerd_namespace import LEDGER_KIND, release_entry
from layerbench.kernel import mountinfo, process
from layerbench.kernel.process import ProcessId, environ_has
from layerbench.run.ledger import LEDGER_NAME, TAG, Ledger, release, release_abandoned, run_id

from .conftest import ROOT


def _records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_made_and_released_are_records_in_order_after_the_run_record(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_NAME).open()
    ledger.made("dir", tmp_path / "d")
    ledger.released("dir", tmp_path / "d")
    ledger.close()
    assert _records(tmp_path / LEDGER_NAME) == [
        {"op": "run", "pid": os.getpid()},
        {"op": "make", "kind": "dir", "path": str(tmp_path / "d")},
        {"op": "release", "kind": "dir", "path": str(tmp_path / "d")},
    ]


def test_what_was_released_is_left_alone_and_a_torn_last_record_is_skipped(tmp_path: Path) -> None:
    kept, left = tmp_path / "kept", tmp_path / "left"
    kept.write_text("the run released it; someone else's now")
    left.write_text("x")
    ledger = Ledger(tmp_path / LEDGER_NAME).open()
    ledger.made("file", kept)
    ledger.released("file", kept)
    ledger.made("file", left)
    ledger.close()
    with open(tmp_path / LEDGER_NAME, "a") as f:
        f.write('{"op": "make", "kind": "file", "pa')  # the crash cut this record short
    assert release(tmp_path / LEDGER_NAME) == [f"removed {left}"]
    assert kept.exists() and not left.exists()


def test_cleanup_skips_a_live_run_and_releases_a_dead_one(tmp_path: Path) -> None:
    dead, live = tmp_path / "run-dead", tmp_path / "run-live"
    for run in (dead, live):
        run.mkdir()
        ledger = Ledger(run / LEDGER_NAME).open()
        ledger.made("dir", run / "cell")
        (run / "cell").mkdir()
        if run == dead:
            ledger.close()
    try:
        actions, running = release_abandoned(tmp_path)
        assert running == [str(live)]  # its lock is held: a run that still lives is not touched
        assert actions == [f"removed {dead / 'cell'}", f"removed {dead}"] and not dead.exists()
        assert (live / "cell").is_dir() and (live / LEDGER_NAME).exists()
    finally:
        ledger.close()
    actions, running = release_abandoned(tmp_path)  # the lock went with the run
    assert running == [] and not live.exists()


_CRASH = """
import os, signal, sys
from pathlib import Path
from layerbench.run.backing import BackingStore
from layerbench.run.ledger import Ledger
run = Path(sys.argv[1])
store = BackingStore(run / "cell", "ext4", 64 << 20, ledger=Ledger(run / "ledger.jsonl").open())
(store.open() / "data").write_bytes(b"x" * 4096)
print(store.loop, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _loops_of(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout


@pytest.mark.mounts
@pytest.mark.skipif(not ROOT, reason="a loop-mounted store needs root")
def test_a_killed_run_leaves_a_mount_and_a_loop_device_that_cleanup_releases(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    (run / "cell").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(run)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    loop, image, point = proc.stdout.strip(), run / "cell" / "backing.ext4.img", run / "cell" / "mnt"
    assert loop.startswith("/dev/loop") and loop in _loops_of(image)
    assert mountinfo.points_below(str(tmp_path)) == [str(point)]  # what the crash left behind
    actions, live = release_abandoned(tmp_path)
    assert live == []
    assert actions[0] == f"unmounted {point}" and actions[1].startswith(f"detached {loop}")
    assert f"removed {image}" in actions and f"removed {point}" in actions
    assert mountinfo.points_below(str(tmp_path)) == [] and _loops_of(image) == "" and not image.exists()
    assert os.listdir(run) == ["cell"] and os.listdir(run / "cell") == []  # the cell dir is the test's own


_RUN_WITH_A_DAEMON = """
import os, signal, subprocess, sys
from pathlib import Path
from layerbench.run.ledger import Ledger, daemon_id
run = Path(sys.argv[1])
led = Ledger(run / "ledger.jsonl").open()
proc = subprocess.Popen(  # held until the ledger has it, then `exec`ed under the same pid
    ["/bin/sh", "-c", 'read -r _ && exec "$@"', "sleeper", "sleep", "1000"],
    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
)
led.made("daemon", daemon_id(proc.pid))
proc.stdin.write(b"go\\n")
proc.stdin.close()
while os.readlink(f"/proc/{proc.pid}/exe") != "/usr/bin/sleep":
    pass
print(proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_daemon_of_a_killed_run_is_stopped_by_cleanup(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    run.mkdir()
    proc = subprocess.run([sys.executable, "-c", _RUN_WITH_A_DAEMON, str(run)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid = int(proc.stdout)
    daemon = ProcessId.of(pid)
    assert daemon is not None and daemon.alive() and daemon.exe == "/usr/bin/sleep"  # the killed run left it
    actions, live = release_abandoned(tmp_path)
    assert live == [] and actions[0] == f"stopped process {pid} (/usr/bin/sleep)"
    assert not daemon.alive()
    assert release_abandoned(tmp_path) == ([], [])  # idempotent: the run directory went with its ledger


def test_a_daemon_record_stops_only_that_very_process_of_that_run(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k != TAG}
    untagged = subprocess.Popen(["sleep", "1000"], env=env)  # someone else's: right pid and start, no tag
    other = tmp_path / "run-2" / LEDGER_NAME
    tagged = subprocess.Popen(["sleep", "1000"], env={**env, TAG: str(other)})  # another run's
    unnamed = subprocess.Popen(["sleep", "1000"], env={**env, TAG: str(run / LEDGER_NAME)})  # made before its entry
    # Popen returns as execve closes the child's fds, a moment before /proc/PID/environ shows the new environment
    deadline = time.monotonic() + 10
    while not all(environ_has(p.pid, TAG, str(t)) for p, t in ((tagged, other), (unnamed, run / LEDGER_NAME))):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        a, b, c = ProcessId.of(untagged.pid), ProcessId.of(tagged.pid), ProcessId.of(unnamed.pid)
        assert a is not None and b is not None and c is not None
        records = [
            {"op": "make", "kind": "daemon", "path": f"{a.pid}:{a.start}"},
            {"op": "make", "kind": "daemon", "path": f"{b.pid}:{b.start + 1}"},  # a recycled pid: another start
            {"op": "make", "kind": "daemon", "path": "1:1"},  # init
            {"op": "make", "kind": "netns", "path": "not-ours"},  # not a name netshape gives
        ]
        (run / LEDGER_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))
        actions = release(run / LEDGER_NAME)
        assert actions == [
            f"stopped process {c.pid} (/usr/bin/sleep): it carries this run's {TAG}",  # no entry needed
            "skipped daemon 1:1: not a daemon as the ledger names one (<pid>:<start time>)",
            f"skipped daemon {a.pid}:{a.start}: pid {a.pid} (/usr/bin/sleep) does not carry this run's {TAG}",
        ]
        assert a.alive() and b.alive() and not c.alive()
    finally:
        for p in (untagged, tagged, unnamed):
            p.kill()
            p.wait()


def test_a_run_tags_the_processes_it_starts_with_its_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TAG, raising=False)  # a ledger another test left open in this process
    ledger = Ledger(tmp_path / LEDGER_NAME).open()
    try:
        child = subprocess.run(["sh", "-c", f"echo ${TAG}"], capture_output=True, text=True, check=True)
        assert child.stdout.strip() == str(tmp_path / LEDGER_NAME)
    finally:
        ledger.close()
    assert TAG not in os.environ


def _take_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A process started with pid `pid` (freed just before): the kernel's next pid set by ns_last_pid. None when
    another process of the machine took it first."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    proc = subprocess.Popen(["sleep", "60"], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if proc.pid == pid:
        return proc
    proc.kill()
    proc.wait()
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (/proc/sys/kernel/ns_last_pid)")
def test_a_tagged_process_whose_pid_is_reused_while_read_names_not_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`carrying` read a process's environment and only then its identity: a tagged process that exited in
    between, its pid taken by an untagged one (a root daemon, another run's), named that other, and
    `cleanup` killed it. The pid is really reused here (ns_last_pid) in that instant."""
    tag = str(tmp_path / LEDGER_NAME)
    taken: list[subprocess.Popen[bytes]] = []
    real = process.environ_has

    def reused(pid: int, key: str, value: str) -> bool:
        had = real(pid, key, value)
        if had and pid == tagged.pid and not taken:  # exits, its pid is another's, the answer already given
            tagged.kill()
            tagged.wait()
            if (other := _take_pid(pid)) is not None:
                taken.append(other)
        return had

    monkeypatch.setattr(process, "environ_has", reused)
    try:
        for _ in range(20):  # another process of the machine may take the pid first: try again
            tagged = subprocess.Popen(["sleep", "60"], env={**os.environ, TAG: tag})
            while not real(tagged.pid, TAG, tag):  # execve done: the environment shows
                time.sleep(0.01)
            found = process.carrying(TAG, tag)
            if taken:
                break
            tagged.kill()
            tagged.wait()
        else:
            pytest.skip("the freed pid was taken by another process of the machine each time")
        assert taken[0].poll() is None
        assert [p.pid for p in found] == [], f"the untagged process {taken[0].pid} that took the pid was named"
    finally:
        for proc in taken:
            proc.kill()
            proc.wait()


def _found_then_reused(tag: str) -> tuple[process.Held, subprocess.Popen[bytes]] | None:
    """A tagged process found (`held_carrying`), then exited, its pid taken by an untagged process started
    within the same clock tick: the newcomer has the found one's very `ProcessId` (pid, start time,
    executable). None when the tick ended first or another process of the machine took the pid."""
    tick = process.boot_ticks()
    while process.boot_ticks() == tick:  # a tick begins: all of it for what follows
        pass
    tagged = subprocess.Popen(["sleep", "60"], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), TAG: tag})
    while not environ_has(tagged.pid, TAG, tag):  # execve done: the environment shows
        pass
    held = process.held_carrying(TAG, tag)
    tagged.kill()
    tagged.wait()
    other = _take_pid(tagged.pid)
    if other is not None and [ProcessId.of(other.pid)] == list(held):
        return held, other
    held.close()
    if other is not None:
        other.kill()
        other.wait()
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (/proc/sys/kernel/ns_last_pid)")
def test_a_tagged_process_whose_pid_is_reused_after_it_was_found_is_not_the_one_stopped(tmp_path: Path) -> None:
    """`carrying` closed the pidfd it had read each process through and `stop_all` opened another by pid: a
    tagged process that exited in between, its pid taken by another started within the same clock tick (the
    same pid, start time and executable: the same `ProcessId`), was that other to `stop_all`, which killed it.
    The found processes are now held by their first pidfds and stopped through them. The pid is really reused
    here (ns_last_pid), between the finding and the stopping, within the found process's tick."""
    for _ in range(200):  # the tick may end first, another process of the machine may take the pid: again
        if (got := _found_then_reused(str(tmp_path / LEDGER_NAME))) is not None:
            break
    else:
        pytest.skip("no pid was reused within the clock tick its process started in")
    held, other = got
    try:
        newcomer = ProcessId.of(other.pid)
        assert newcomer is not None and newcomer.alive()
        assert process.stop_all(held, grace=5.0) == []  # the found process was gone: not there to stop
        assert other.poll() is None and newcomer.alive(), f"the untagged process {other.pid} was signalled"
    finally:
        held.close()
        other.kill()
        other.wait()


def _plant(run: Path, entries: list[str]) -> None:
    records = [{"op": "make", "kind": LEDGER_KIND, "path": e} for e in entries]
    (run / LEDGER_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_planted_containerd_namespace_not_of_that_run_is_refused_before_any_connection(tmp_path: Path) -> None:
    """`cleanup` acts on a `containerd-namespace` entry only when the namespace carries the id of the run whose
    ledger names it: another run's, an untagged `layerbench-<hex>` (outside a run) or the user's own is skipped
    with its line, the daemon never reached, and the entry stays."""
    run = tmp_path / "run-1"
    run.mkdir(mode=0o700)
    other = run_id(tmp_path / "run-2" / LEDGER_NAME)
    assert run_id(run / LEDGER_NAME) != other
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "c.sock"))
        listener.listen(8)
        listener.setblocking(False)
        address = str(tmp_path / "c.sock")
        planted = [
            f"default@{address}",
            f"layerbench-0123456789ab@{address}",
            f"layerbench-{other}-0123456789ab@{address}",
        ]
        _plant(run, planted)
        actions, live = release_abandoned(tmp_path, {LEDGER_KIND: release_entry})
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: refused on the name alone
    mine = run_id(run / LEDGER_NAME)
    assert live == [] and actions == [
        f"skipped {LEDGER_KIND} {e}: not a namespace this run made (layerbench-{mine}-<hex>)" for e in reversed(planted)
    ]
    assert (run / LEDGER_NAME).exists()  # kept: what it names was not released


def test_a_namespace_on_a_daemon_gone_is_one_line_and_the_entry_dropped(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    run.mkdir(mode=0o700)
    namespace = f"layerbench-{run_id(run / LEDGER_NAME)}-0123456789ab"
    _plant(run, [f"{namespace}@{tmp_path / 'gone.sock'}"])
    actions, live = release_abandoned(tmp_path, {LEDGER_KIND: release_entry})
    assert live == [] and actions == [
        f"containerd at {tmp_path / 'gone.sock'}: No such file or directory; namespace {namespace} not released there",
        f"removed {run}",
    ]


def test_without_a_releaser_for_its_kind_a_namespace_entry_stays(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    run.mkdir(mode=0o700)
    entry = f"layerbench-{run_id(run / LEDGER_NAME)}-0123456789ab@/run/containerd/containerd.sock"
    _plant(run, [entry])
    assert release(run / LEDGER_NAME) == [f"skipped {LEDGER_KIND} {entry}: an unknown kind"]
