"""A fleet's long-lived processes: its scheduler and each host's worker (docs/fleet.md).

Both are closed by default: they listen on loopback unless given an address, speak only
mutual TLS (harness/run/fleet_tls.py), and serve their HTTP endpoints (Dask's health and
metrics pages; no dashboard) on 127.0.0.1 only. A host's worker outlives its scheduler: when
the scheduler goes, Dask's worker and its nanny close; `serve_worker` starts a new nanny that
tries to reach the scheduler again, for up to `reconnect_timeout_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerbench.errors import UserError
from layerbench.run.fleet_tls import FleetTLS, address_host, is_loopback

__all__ = ["quiet_dask", "serve_scheduler", "serve_worker", "listen_host", "RECONNECT_TIMEOUT_S", "HTTP_ADDRESS"]

RECONNECT_TIMEOUT_S = 600.0  # a worker keeps trying to reach its scheduler this long before it gives up
HTTP_ADDRESS = "127.0.0.1:0"  # Dask's HTTP endpoints (health, metrics): this machine only, any port
HOST_RESOURCE = "host"  # every layerbench worker has 1; every cell takes it: one cell per host at a time
HOST_ENV, WORK_ROOT_ENV = "LAYERBENCH_HOST", "LAYERBENCH_WORK_ROOT"

Say = Callable[[str], None]


def host_resource(name: str) -> str:
    """The resource only host `name`'s worker has: a cell that takes it runs there."""
    return f"host/{name}"


def listen_host(address: str | None, option: str) -> str:
    """The address to listen on: loopback unless told; an unspecified one (every interface) refused."""
    if address is None:
        return "127.0.0.1"
    host = address.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        raise UserError(f"{option} {address}: name one address to listen on, not every interface")
    return host


def quiet_dask() -> None:
    """Dask's own log at WARNING and above: a fleet process says what layerbench says (each start,
    connection, cell error), not Dask's INFO lines about every call. `DASK_LOGGING__DISTRIBUTED=info`
    (Dask's own setting, read by the worker processes a nanny starts too) brings them back."""
    level = os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    with contextlib.suppress(ValueError):  # a level logging does not know: Dask says so itself
        logging.getLogger("distributed").setLevel(level.upper())


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    return stop


async def _first(*aws: Any) -> None:
    """Wait until the first of `aws` is done; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()


def _refused(exc: BaseException) -> str | None:
    """Why the scheduler refused us for good (TLS: another CA, a bad certificate), if it did; None if it
    was only not there."""
    import ssl

    from distributed.comm.core import FatalCommClosedError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FatalCommClosedError | ssl.SSLError):
            return str(seen).splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return None


def serve_scheduler(host: str, port: int, tls: FleetTLS, say: Say, address_file: Path | None = None) -> None:
    """Serve a fleet's scheduler on `host`:`port` until SIGTERM or Ctrl-C.

    A cell whose worker dies is an error at once (allowed_failures 0), never run again on a
    host that might die again.
    """
    quiet_dask()
    import dask.config
    from distributed import Scheduler

    async def serve() -> None:
        stop = _stop_on_signals()
        async with Scheduler(
            host=host,
            port=port,
            protocol="tls",
            security=tls.security(),
            dashboard=False,
            dashboard_address=HTTP_ADDRESS,
        ) as scheduler:
            scheduler.allowed_failures = 0
            say(f"scheduler: serving {scheduler.address} (mutual TLS, CA {tls.ca})")
            if address_file is not None:
                address_file.write_text(scheduler.address + "\n")
            await _first(scheduler.finished(), stop.wait())

    # Dask's lock files (dask-scratch-space/) in a directory of this scheduler's own, gone when it ends, not
    # left in the machine's temporary directory
    with (
        tempfile.TemporaryDirectory(prefix="layerbench-scheduler-") as scratch,
        dask.config.set({"temporary-directory": scratch}),
    ):
        asyncio.run(serve())


def serve_worker(
    scheduler: str,
    host: str,
    work_root: Path,
    tls: FleetTLS,
    listen: str,
    say: Say,
    reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
) -> None:
    """Serve as host `host`'s one worker (one thread, the `host` resources) until SIGTERM or Ctrl-C.

    When the scheduler goes, start again and try to reach it for up to `reconnect_timeout_s`
    seconds; then give up with one line.
    """
    quiet_dask()
    if not is_loopback(listen) and is_loopback(address_host(scheduler)):
        say(f"host {host}: note: listening on {listen} for a scheduler on this machine ({scheduler})")

    def nanny(death_timeout_s: float) -> Any:
        return _nanny(scheduler, host, work_root, tls, listen, death_timeout_s)

    asyncio.run(_serve_worker(scheduler, host, nanny, say, reconnect_timeout_s))


def _nanny(scheduler: str, host: str, work_root: Path, tls: FleetTLS, listen: str, death_timeout_s: float) -> Any:
    """A new Dask nanny for host `host`'s worker, giving up on the scheduler after `death_timeout_s`."""
    from distributed import Nanny

    return Nanny(
        scheduler,
        name=host,
        nthreads=1,
        memory_limit=0,
        host=listen,
        protocol="tls",
        security=tls.security(),
        death_timeout=death_timeout_s,
        dashboard=False,
        dashboard_address=HTTP_ADDRESS,
        resources={HOST_RESOURCE: 1, host_resource(host): 1},
        env={HOST_ENV: host, WORK_ROOT_ENV: str(work_root)},
        local_directory=str(work_root / "dask"),
    )


async def _serve_worker(
    scheduler: str, host: str, nanny: Callable[[float], Any], say: Say, reconnect_timeout_s: float
) -> None:
    """Start a nanny (`nanny(death timeout)`) until one reaches the scheduler, serve until it goes, again."""
    stop = _stop_on_signals()
    lost_at = time.monotonic()  # at start as after a loss: the scheduler may come a little later
    while not stop.is_set():
        left = reconnect_timeout_s - (time.monotonic() - lost_at)
        if left <= 0:
            raise UserError(
                f"host {host}: no scheduler at {scheduler} for {reconnect_timeout_s:g} s "
                f"(--reconnect-timeout); giving up"
            )
        worker = nanny(max(left, 1.0))
        starting = asyncio.ensure_future(worker.start())
        await _first(starting, stop.wait())
        if stop.is_set():
            await worker.close(reason="layerbench-worker-stop")
            break
        if (exc := starting.exception()) is not None:  # no scheduler (yet), or it refused us
            await worker.close(reason="layerbench-worker-reconnect")
            if (refused := _refused(exc)) is not None:
                raise UserError(f"host {host}: the scheduler {scheduler} refused this worker: {refused}")
            await _first(asyncio.sleep(1.0), stop.wait())
            continue
        say(f"host {host}: connected to {scheduler}")
        await _first(worker.finished(), stop.wait())
        await worker.close(reason="layerbench-worker-stop" if stop.is_set() else "scheduler-lost")
        if not stop.is_set():
            lost_at = time.monotonic()
            say(
                f"host {host}: lost the scheduler {scheduler}; trying to reconnect for up to "
                f"{reconnect_timeout_s:g} s (--reconnect-timeout)"
            )
