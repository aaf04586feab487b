"""What mutual TLS costs a fleet cell: Dask's round trip of one cell's result, TLS against plain TCP, side by side.

A fleet cell is one Dask task: the client submits it, a worker runs it and sends the cell's result
back (run/fleet.py). This starts, in this process, a Dask scheduler and one worker twice over on
127.0.0.1: once speaking mutual TLS with certificates from `make_fleet_certs` (as `layerbench
scheduler` / `worker` do: FleetTLS.security), once plain TCP (which layerbench itself never
offers; here only as the baseline). Each round submits one task per protocol, the order
rotating, whose result is a real cell of a reference run (the largest one, as JSON-ready data), and
times submit -> result on the client. The clock holds the round trip only: the payload is made
before it, and the worker's function returns it as it is.

    python benchmarks/fleet_tls.py [--rounds 200] [--cell results/reference/...json]

prints both medians, their difference and ratio, and the difference against the median cell's
`duration_s` of the same reference run: the share of a cell TLS adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from layerbench.run.fleet_services import quiet_dask
from layerbench.run.fleet_tls import FleetTLS, make_fleet_certs

REFERENCE = Path(__file__).parent.parent / "results" / "reference" / "20261205T084929Z_default-a.json"


def _echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


async def _round_trips(security: Any, protocol: str, payloads: list[dict[str, Any]], scratch: str) -> list[float]:
    from distributed import Client, Scheduler, Worker

    kw = {"security": security} if security is not None else {}
    async with Scheduler(protocol=protocol, host="127.0.0.1", port=0, dashboard=False, **kw) as scheduler:  # noqa: SIM117
        async with (
            Worker(scheduler.address, host="127.0.0.1", nthreads=1, local_directory=scratch, **kw),
            Client(scheduler.address, asynchronous=True, **kw) as client,
        ):
            await client.submit(_echo, {"warm": 1}, pure=False)  # connections made, function shipped
            times = []
            for payload in payloads:
                t0 = time.perf_counter_ns()
                await client.submit(_echo, payload, pure=False)
                times.append((time.perf_counter_ns() - t0) / 1e6)
            return times


def measure(rounds: int, doc: dict[str, Any]) -> dict[str, list[float]]:
    """Round trips in ms per protocol, `rounds` each, in batches of 20 alternating between the two."""
    quiet_dask()
    cell = max(doc["cells"], key=lambda c: len(json.dumps(c)))
    import dask.config

    with tempfile.TemporaryDirectory(prefix="lb-fleet-tls-") as tmp, dask.config.set({"temporary-directory": tmp}):
        folder = Path(tmp) / "certs"
        make_fleet_certs(folder, ["127.0.0.1"])
        tls = FleetTLS(folder / "ca.pem", folder / "127.0.0.1.pem", folder / "127.0.0.1-key.pem").security()
        got: dict[str, list[float]] = {"tls": [], "tcp": []}
        batch = 20
        for i in range(0, rounds, batch):
            order = [("tls", tls, "tls"), ("tcp", None, "tcp")]
            for name, security, protocol in order if (i // batch) % 2 == 0 else reversed(order):
                payloads = [dict(cell, sample=j) for j in range(min(batch, rounds - i))]
                got[name] += asyncio.run(_round_trips(security, protocol, payloads, tmp))
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--cell", type=Path, default=REFERENCE, help="the results file whose largest cell is sent")
    opts = parser.parse_args()
    doc = json.loads(opts.cell.read_text())
    got = measure(opts.rounds, doc)
    tls, tcp = statistics.median(got["tls"]), statistics.median(got["tcp"])
    size = max(len(json.dumps(c)) for c in doc["cells"])
    cell_s = statistics.median(c["duration_s"] for c in doc["cells"] if c.get("duration_s"))
    print(f"one cell's result ({size:,} bytes of JSON) through Dask on 127.0.0.1, {opts.rounds} round trips each")
    print(f"  mutual TLS  median {tls:.2f} ms")
    print(f"  plain TCP   median {tcp:.2f} ms")
    print(f"  TLS adds {tls - tcp:+.2f} ms a cell ({tls / tcp:.2f}x the round trip)")
    print(f"  against the median cell of {opts.cell.name} ({cell_s:.2f} s): {(tls - tcp) / 1000 / cell_s:.2%}")


if __name__ == "__main__":
    main()
