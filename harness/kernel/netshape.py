"""The network between a cell's registry and its puller (run/registry.py): loopback, or a veth pair shaped with tbf.

`link = "loopback"` leaves the registry on 127.0.0.1. Any rate (`"1gbit"`, `"100mbit"`,
`"10mbit"`, `"512kbit"`) puts the registry in a network namespace of its own behind a
veth pair, its side shaped with `tc qdisc ... tbf` (this kernel has no netem: tbf shapes
bandwidth only). The namespace and the host's veth end are written to the run's ledger
before they are made, so `layerbench cleanup` removes them after a SIGKILL; the context
manager removes them after errors and signals.

A rate may carry an added round-trip delay, `"100mbit+20ms"` (1 to 1000 ms; only with a
rate: loopback has no namespace to put it in). netem being absent, the delay is ours:
run/delayproxy.py, a TCP proxy in the namespace in front of the registry (run/registry.py
starts it, a `daemon` of the run's ledger), holds each chunk of data half the delay in
each direction, in order and without cutting the rate (a queue per direction, not a sleep
per read). So every request and its answer take the delay more: the round-trip time a
connection's data exchange sees grows by it. The TCP handshake with the proxy is not
delayed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from layerbench.errors import UserError

__all__ = ["Link", "Notes", "parse_link", "shaped_net", "ShapedNet", "link_unavailable", "release_net", "tbf_args"]

_RATE = re.compile(r"^(\d{1,6})(kbit|mbit|gbit)(?:\+(\d{1,6})ms)?$")
_EXPECTED = (
    "expected loopback, a rate such as 1gbit, 100mbit, 10mbit, 512kbit, "
    "or a rate and an added round-trip delay such as 100mbit+20ms"
)
MIN_DELAY_MS, MAX_DELAY_MS = 1, 1000
_UNIT = {"kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}


class Notes(Protocol):
    """Where a namespace and a veth are written down before they are made (the run's ledger, run/ledger.py)."""

    def made(self, kind: str, path: str) -> None: ...

    def released(self, kind: str, path: str) -> None: ...


@dataclass(frozen=True)
class Link:
    """A link by name: `loopback`, or a rate in bits per second and an added round-trip delay."""

    name: str
    rate_bps: int | None  # None: loopback, unshaped
    delay_ms: int = 0  # round-trip time added by run/delayproxy.py; 0: none (only with a rate)

    @property
    def shaped(self) -> bool:
        return self.rate_bps is not None


def parse_link(text: object) -> Link:
    """`loopback`, or a rate such as `1gbit`, `100mbit`, `10mbit`, `512kbit`, optionally with an added
    round-trip delay (`100mbit+20ms`); else one line saying so."""
    if text == "loopback":
        return Link("loopback", None)
    if isinstance(text, str) and text.startswith("loopback+"):
        raise UserError(
            f"link {text[:60]!r}: a delay needs a rate (loopback has no namespace for it), such as 1gbit+5ms"
        )
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) == 0:
        raise UserError(f"link {str(text)[:60]!r}: {_EXPECTED}")
    rate = int(m.group(1)) * _UNIT[m.group(2)]
    if not 64_000 <= rate <= 100_000_000_000:
        raise UserError(f"link {text!r}: a rate between 64kbit and 100gbit")
    delay = 0 if m.group(3) is None else int(m.group(3))
    if m.group(3) is not None and not MIN_DELAY_MS <= delay <= MAX_DELAY_MS:
        raise UserError(f"link {text!r}: a round-trip delay between {MIN_DELAY_MS}ms and {MAX_DELAY_MS}ms")
    return Link(str(text), rate, delay)


def link_unavailable() -> str | None:
    """Why a shaped link cannot be made here, or None."""
    if os.geteuid() != 0 or _in_userns():
        return "a shaped link needs root outside a user namespace (a network namespace, a veth pair and tc)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            return f"a shaped link needs {tool} ({package})"
    return None


def _in_userns() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


@dataclass(frozen=True)
class ShapedNet:
    """A network namespace behind a veth pair: the registry listens on `ns_ip`, the host reaches it."""

    netns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    link: Link


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip() or 'failed'}")


def _tc(netns: str, *args: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", netns, "tc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"tc {' '.join(args)}: {done.stderr.strip() or 'failed'}")


def _free_subnet() -> int:
    """A /30 of 10.213.0.0/16 no address of this host is in (its third and fourth octet base)."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for _ in range(64):
        n = random.randrange(0, 1 << 14) * 4
        if f"10.213.{n >> 8}.{(n & 255) + 1}/" not in used and f"10.213.{n >> 8}.{(n & 255) + 2}/" not in used:
            return n
    raise OSError("no free /30 in 10.213.0.0/16 for a shaped link")


def tbf_args(rate_bps: int) -> list[str]:
    """tbf's rate, burst (10 ms of the rate, at least 32 kbit: enough for the kernel's timer at any rate) and queue."""
    burst = max(4096, rate_bps // 8 // 100)
    return ["rate", f"{rate_bps}bit", "burst", str(burst), "latency", "50ms"]


@contextmanager
def shaped_net(link: Link, ledger: Notes | None, tag: str) -> Iterator[ShapedNet]:
    """A namespace `lb-<tag>` and a veth pair, the namespace's end shaped to `link`; all removed on exit."""
    if not link.shaped or link.rate_bps is None:
        raise ValueError("shaped_net needs a shaped link")
    if (why := link_unavailable()) is not None:
        raise UserError(f"link {link.name}: {why}")
    netns, host_if, ns_if = f"lb-{tag}", f"lbh{tag}"[:15], f"lbn{tag}"[:15]
    n = _free_subnet()
    host_ip, ns_ip = f"10.213.{n >> 8}.{(n & 255) + 1}", f"10.213.{n >> 8}.{(n & 255) + 2}"
    made: list[tuple[str, str]] = []
    try:
        if ledger is not None:
            ledger.made("netns", netns)
        made.append(("netns", netns))
        _ip("netns", "add", netns)
        if ledger is not None:
            ledger.made("veth", host_if)
        made.append(("veth", host_if))
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", netns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", netns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _ip("netns", "exec", netns, "ip", "link", "set", ns_if, "up")
        _ip("netns", "exec", netns, "ip", "link", "set", "lo", "up")
        _tc(netns, "qdisc", "add", "dev", ns_if, "root", "tbf", *tbf_args(link.rate_bps))
        yield ShapedNet(netns, host_if, ns_if, host_ip, ns_ip, link)
    finally:
        for kind, name in reversed(made):
            release_net(kind, name)
            if ledger is not None:
                ledger.released(kind, name)


_OURS = {"netns": re.compile(r"^lb-[a-z0-9]{1,12}$"), "veth": re.compile(r"^lbh[a-z0-9]{1,12}$")}


def release_net(kind: str, name: str) -> str | None:
    """Remove a namespace or a veth this module made (`cleanup` too); what was done, or None.

    Only names of the form this module gives are touched: a ledger naming anything else is ignored.
    """
    if kind not in _OURS or not _OURS[kind].match(name):
        return None
    if kind == "veth":
        if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            return f"removed veth {name}"
        return None
    if kind == "netns" and os.path.exists(f"/run/netns/{name}"):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        return f"removed network namespace {name}"
    return None
