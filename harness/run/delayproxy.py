"""A delaying TCP proxy: a link's added round-trip delay (`100mbit+20ms`, kernel/netshape.py), without netem.

    python -m layerbench.run.delayproxy LISTEN_HOST:PORT UPSTREAM_HOST:PORT DELAY_MS BUFFER_BYTES

run/registry.py runs it in the registry's network namespace, in front of the registry: the
puller connects to it, it connects to the registry on the namespace's loopback. Each chunk
read from either side is held until it has been in the proxy half of DELAY_MS, then
written to the other side: a queue per direction, read and written by tasks of their own, so
the reading never waits for the delay and the rate is kept (up to BUFFER_BYTES held in a
direction; more waits for the writer, as a TCP window would). Order is kept; an end of file
is passed on, delayed the same. Every request and its answer so take DELAY_MS more. The TCP
handshake with the proxy is not delayed. It runs in the foreground until SIGTERM or SIGKILL
(a `daemon` of the run's ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import deque

__all__ = ["serve", "main"]

_CHUNK = 256 * 1024


class _Held:
    """One direction's chunks, each with the time it may leave; at most `limit` bytes held."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self.items: deque[tuple[float, bytes]] = deque()  # b"": the end of file
        self.changed = asyncio.Condition()

    async def put(self, due: float, data: bytes) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.bytes < self.limit or not data)
            self.items.append((due, data))
            self.bytes += len(data)
            self.changed.notify_all()

    async def get(self) -> tuple[float, bytes]:
        async with self.changed:
            await self.changed.wait_for(lambda: bool(self.items))
            due, data = self.items.popleft()
            self.bytes -= len(data)
            self.changed.notify_all()
            return due, data


async def _read(src: asyncio.StreamReader, held: _Held, one_way_s: float) -> None:
    while True:
        data = await src.read(_CHUNK)
        await held.put(time.monotonic() + one_way_s, data)
        if not data:
            return


async def _write(dst: asyncio.StreamWriter, held: _Held) -> None:
    while True:
        due, data = await held.get()
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if not data:
            if dst.can_write_eof():
                dst.write_eof()
            return
        dst.write(data)
        await dst.drain()


async def _pipe(
    client: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    upstream: tuple[str, int],
    one_way_s: float,
    limit: int,
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(*upstream)
    except OSError:
        client_w.close()
        return
    to_up, to_client = _Held(limit), _Held(limit)
    tasks = [
        asyncio.ensure_future(_read(client, to_up, one_way_s)),
        asyncio.ensure_future(_write(up_w, to_up)),
        asyncio.ensure_future(_read(up_r, to_client, one_way_s)),
        asyncio.ensure_future(_write(client_w, to_client)),
    ]
    try:
        # each direction ends when its end of file is written; a reset on either side ends both
        for done in asyncio.as_completed(tasks):
            await done
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        for w in (up_w, client_w):
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


async def serve(listen: tuple[str, int], upstream: tuple[str, int], delay_ms: int, limit: int) -> None:
    """Accept on `listen`, each connection piped to `upstream` with `delay_ms` added to its round trips;
    until cancelled."""
    one_way_s = delay_ms / 2000

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _pipe(r, w, upstream, one_way_s, limit)

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    async with server:
        await server.serve_forever()


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    listen, upstream, delay_ms, limit = _hostport(argv[0]), _hostport(argv[1]), int(argv[2]), int(argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SystemExit ends asyncio.run, its tasks cancelled
    asyncio.run(serve(listen, upstream, delay_ms, limit))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
