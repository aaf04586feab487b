"""The python image's cold start per driver, phase by phase (issue 23): a benchmark, not a test.

Runs the cold-start scenario with the python image (minbase bookworm + python3 + an app that
imports a web service's modules and prints `ready`) over each link, through one runtime, on
each driver, in one `layerbench run`, then prints per driver and link the medians of: pull
(download), unpack, create (snapshot + mount), runtime (bundle to process), ready (exec to
`ready`), the cold start (their sum, as a user waits), the warm start (image present, pages
cached), a second container of the same image beside it, what the cold start read of the
image and the download's share of the cold start. `--from RESULTS.json` prints the table of
a finished run (the lead's `run cold-start --long ...`) without running anything.

The first run builds the python image under the work root (mmdebstrap from the Debian
mirror, 2-3 minutes; then cached). Long: about a minute per driver and link at 5 samples.

Usage:
    python benchmarks/cold_start.py [-d DRIVER ...] [--link loopback --link 100mbit] [--runtime crun]
        [--recipe python] [--samples 5] [--work-root DIR] [--results-dir DIR]
    python benchmarks/cold_start.py --from RESULTS.json [--recipe python]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from layerbench.analysis import results
from layerbench.analysis.results_model import RunDocument
from layerbench.units import human

#: (column, metric, unit) of the table, in the order a cold start goes
COLUMNS = (
    ("pull", "pull_ns", "ns"),
    ("unpack", "unpack_ns", "ns"),
    ("create", "create_ns", "ns"),
    ("runtime", "runtime_ns", "ns"),
    ("ready", "ready_ns", "ns"),
    ("cold start", "cold_start_ns", "ns"),
    ("warm start", "warm_start_ns", "ns"),
    ("second", "second_start_ns", "ns"),
    ("read", "read_bytes", "bytes"),
    ("read %", "read_fraction", "fraction"),
)
DEFAULT_DRIVERS = (
    "overlay2",
    "containerd-overlayfs",
    "erofs",
    "composefs",
    "squashfs",
    "btrfs",
    "vfs",
    "fuse-overlayfs",
    "reflink",
    "zfs",
    "overlay2-rootless",
)


def phase_table(run: RunDocument, recipe: str) -> str:
    """The cold-start cells of `recipe` as a table: a row per driver, backing, link and runtime."""
    cells = [c for c in run.cells if c.scenario == "cold-start" and c.params.get("recipe") == recipe]
    if not cells:
        return f"no cold-start cells of the {recipe} image in these results\n"
    header = ["driver", "backing", "link", "runtime", "n", *(name for name, _, _ in COLUMNS), "pull share"]
    rows, failed = [], []
    for c in sorted(cells, key=lambda c: (c.params.get("link", ""), c.driver)):
        if not c.ok:
            failed.append(f"{c.driver} {c.params_text}: {c.status}: {c.error}")
            continue
        values = [c.median(metric) for _, metric, _ in COLUMNS]
        texts = ["n/a" if v is None else human(v, unit) for v, (_, _, unit) in zip(values, COLUMNS, strict=True)]
        pull, unpack, cold = values[0], values[1], values[5]
        share = f"{(pull + unpack) / cold:.0%}" if pull is not None and unpack is not None and cold else "n/a"
        n = len(c.samples("cold_start_ns"))
        rows.append([c.driver, c.backing, c.params.get("link", "?"), c.params.get("runtime", "?"), str(n)])
        rows[-1] += [*texts, share]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(x.rjust(w) if i >= 4 else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))
        for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"failed: {line}" for line in failed]
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> Path:
    drivers = [x for d in (args.driver or DEFAULT_DRIVERS) for x in ("-d", d)]
    cmd = [
        sys.executable, "-m", "layerbench", "run", "cold-start", "--long", *drivers,
        "-p", f"recipe={args.recipe}", "-p", f"link={','.join(args.link or ['loopback', '100mbit'])}",
        "-p", f"runtime={args.runtime}", "--samples", str(args.samples), "--order", "planned",
        "--work-root", str(args.work_root), "--results-dir", str(args.results_dir),
    ]  # fmt: skip
    print("$ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = [line.split(": ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("results: ")]
    if not found:  # no results file: the run stopped before its first cell
        sys.exit(f"layerbench run failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return Path(found[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-d", "--driver", action="append", help="a driver (repeatable; default: all eleven)")
    parser.add_argument("--link", action="append", help="a link (repeatable; default: loopback and 100mbit)")
    parser.add_argument("--runtime", default="crun", choices=("crun", "builtin"))
    parser.add_argument("--recipe", default="python", help="the Debian image recipe (default: python)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--work-root", type=Path, default=Path("/var/tmp/layerbench-cold-start"))
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--from", dest="source", type=Path, help="print the table of this results file; run nothing")
    args = parser.parse_args()
    path = args.source or _run(args)
    try:
        run = results.read_document(path)
    except Exception as exc:  # noqa: BLE001  one line, whatever the file holds
        sys.exit(f"{path}: {exc}")
    print(f"cold start of the {args.recipe} image, per driver (medians; {path})")
    print(phase_table(run, args.recipe), end="")


if __name__ == "__main__":
    main()
