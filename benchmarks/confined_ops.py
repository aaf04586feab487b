"""What confining the file steps (issue 20) does to their timed regions, measured side by side.

Before: each timed op took the file's absolute path (`os.open("/work/.../merged/usr/d3/f.bin")`,
`os.chmod(path)`, `os.truncate(path)` ...), so the clock held the lookup of every component from
`/`. Now (harness/kernel/confined.py): each parent directory is opened beneath the container
root with openat2(2) before the clock, and the timed op is one syscall on a single name in it
(`openat`, `fchmodat2`, `fstatat`, `unlinkat`; `truncate` = `open` + `ftruncate`). The "new"
column runs `steps._FILE_OPS`, the code a run runs; "old" is the code before, copied here.

On a real overlayfs mount (a lower of N files, 64 KiB each, 3 directories deep, under the work
root's filesystem), each round makes a fresh upper (so `append`, `chmod`, `truncate` and
`open_rdwr` copy up) and times one batch over all files; old and new alternate, the order
rotating every round. Prints the median per file of each and their ratio.

    python benchmarks/confined_ops.py [--work-root /var/tmp/lb-NAME] [--files 400] [--rounds 15]

Needs root (overlay mounts). Everything it makes is under the work root and removed after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns

from layerbench.kernel import syscalls
from layerbench.kernel.confined import Parents, Root
from layerbench.run import steps

FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _old(op: str, paths: list[str]) -> Callable[[], None]:
    """The timed batch as it was before confinement: absolute paths, resolved inside the clock."""

    def one(p: str) -> None:
        if op == "append":
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | FLAGS)
            os.fstat(fd)
            os.write(fd, b"x")
            os.close(fd)
        elif op == "open_rdwr":
            fd = os.open(p, os.O_RDWR | FLAGS)
            os.fstat(fd)
            os.close(fd)
        elif op == "stat":
            os.lstat(p)
        elif op == "chmod":
            os.chmod(p, 0o600)
        elif op == "truncate":
            os.truncate(p, 0)
        elif op == "read":
            fd = os.open(p, os.O_RDONLY | FLAGS)
            os.fstat(fd)
            while os.read(fd, 1 << 20):
                pass
            os.close(fd)
        elif op == "unlink":
            os.unlink(p)

    def run() -> None:
        for p in paths:
            one(p)

    return run


ARGS = {"append": {"bytes": 1}, "chmod": {"mode": 0o600}, "truncate": {"size": 0}}
OPS = ["append", "open_rdwr", "chmod", "truncate", "stat", "read", "unlink"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work-root", default="/var/tmp/lb-confined-bench")
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    base = Path(a.work_root) / "confined-ops"
    lower = base / "lower"
    rels = [f"usr/d{i % 4}/e{i % 3}/g{i % 5}/f{i}.bin" for i in range(a.files)]
    for rel in rels:
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_bytes(b"y" * 65536)
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for r in range(a.rounds):
            for op in OPS:
                for way in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    trial = base / f"t-{op}-{way}"
                    for d in ("upper", "work", "merged"):
                        (trial / d).mkdir(parents=True)
                    merged = str(trial / "merged")
                    syscalls.overlay_mount(merged, [str(lower)], str(trial / "upper"), str(trial / "work"))
                    try:
                        if way == "old":
                            fn = _old(op, [f"{merged}/{rel}" for rel in rels])
                            t0 = perf_counter_ns()
                            fn()
                            t1 = perf_counter_ns()
                        else:
                            with Root(merged) as box, Parents(box) as parents:
                                targets = parents.prepare(rels)  # before the clock, as _file_op does
                                fn = steps._FILE_OPS[op](ARGS.get(op, {}), targets)
                                t0 = perf_counter_ns()
                                fn()
                                t1 = perf_counter_ns()
                        results.setdefault((op, way), []).append((t1 - t0) / len(rels))
                    finally:
                        syscalls.umount(merged)
                        shutil.rmtree(trial)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{a.files} files, 64 KiB each, 3 directories deep on overlayfs; median of {a.rounds} rounds, ns per file")
    print(f"{'op':<10} {'old (path)':>12} {'new (dirfd)':>12} {'new/old':>8}")
    for op in OPS:
        old, new = statistics.median(results[(op, "old")]), statistics.median(results[(op, "new")])
        print(f"{op:<10} {old:>12,.0f} {new:>12,.0f} {new / old:>8.2f}")


if __name__ == "__main__":
    main()
