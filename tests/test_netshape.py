"""A link's spec (kernel/netshape.py's parse_link) and the delaying proxy (run/delayproxy.py) on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from layerbench.errors import UserError
from layerbench.kernel.netshape import Link, parse_link
from layerbench.run.delayproxy import serve
from layerbench.run.registry import proxy_buffer


def test_a_rate_with_a_delay_is_a_link_with_both() -> None:
    assert parse_link("100mbit+20ms") == Link("100mbit+20ms", 100_000_000, 20)
    assert parse_link("1gbit+1ms").delay_ms == 1 and parse_link("512kbit+1000ms").delay_ms == 1000
    assert parse_link("100mbit") == Link("100mbit", 100_000_000, 0)
    assert parse_link("loopback") == Link("loopback", None, 0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("loopback+5ms", "a delay needs a rate (loopback has no namespace for it), such as 1gbit+5ms"),
        ("100mbit+0ms", "a round-trip delay between 1ms and 1000ms"),
        ("100mbit+1001ms", "a round-trip delay between 1ms and 1000ms"),
        ("100mbit+20", "expected loopback, a rate such as"),
        ("100mbit+20s", "expected loopback, a rate such as"),
        ("100mbit+-5ms", "expected loopback, a rate such as"),
        ("100mbit+5ms+5ms", "expected loopback, a rate such as"),
        ("20ms", "expected loopback, a rate such as"),
        ("+20ms", "expected loopback, a rate such as"),
        ("100mbit +20ms", "expected loopback, a rate such as"),
        ("1kbit+20ms", "a rate between 64kbit and 100gbit"),
    ],
)
def test_a_bad_delay_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(UserError) as exc:
        parse_link(text)
    assert "\n" not in str(exc.value) and says in str(exc.value), str(exc.value)
    assert str(exc.value).startswith(f"link {text!r}: ")


def test_the_proxy_buffer_is_twice_the_rate_times_the_delay_within_bounds() -> None:
    assert proxy_buffer(parse_link("1gbit+100ms")) == 2 * 12_500_000
    assert proxy_buffer(parse_link("512kbit+1ms")) == 1 << 20
    assert proxy_buffer(parse_link("100gbit+1000ms")) == 256 << 20


@pytest.fixture
def echo_behind_proxy() -> Iterator[tuple[int, int]]:
    """An echo server on loopback, and the proxy in front of it with 100 ms: (echo port, proxy port)."""
    echo = socket.create_server(("127.0.0.1", 0))
    proxy_port = _free_port()

    def echo_loop() -> None:
        while True:
            try:
                conn, _ = echo.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=echo_loop, daemon=True).start()

    async def proxy() -> None:
        try:
            await serve(("127.0.0.1", proxy_port), echo.getsockname(), 100, 1 << 20)
        except asyncio.CancelledError:  # as asyncio.run ends the proxy's main: its connections' tasks too
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    loop = asyncio.new_event_loop()
    task = loop.create_task(proxy())
    runner = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.01)
    yield echo.getsockname()[1], proxy_port
    loop.call_soon_threadsafe(task.cancel)
    runner.join(10)
    loop.close()
    echo.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _round_trips(port: int, n: int, size: int) -> float:
    """`n` sequential exchanges of `size` bytes on one connection; the seconds they took."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        for i in range(n):
            payload = bytes([i % 256]) * size
            s.sendall(payload)
            got = b""
            while len(got) < size:
                got += s.recv(size - len(got))
            assert got == payload
        return time.monotonic() - start


def test_the_proxy_adds_its_delay_to_every_round_trip_and_keeps_the_bytes_in_order(
    echo_behind_proxy: tuple[int, int],
) -> None:
    _, proxied = echo_behind_proxy
    assert _round_trips(proxied, 5, 10) >= 5 * 0.100 - 0.01  # each exchange: 50 ms there, 50 ms back
    # a stream much larger than a chunk, through the queues: every byte, in order
    data = bytes(range(256)) * 40_000  # 10 MB
    with socket.create_connection(("127.0.0.1", proxied)) as s:
        threading.Thread(target=s.sendall, args=(data,), daemon=True).start()
        got = bytearray()
        while len(got) < len(data):
            chunk = s.recv(1 << 20)
            assert chunk
            got += chunk
    assert bytes(got) == data
