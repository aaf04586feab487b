"""The fleet's TLS options, shared by `worker`, `scheduler` and `run --cluster` (docs/fleet.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

__all__ = ["tls_options"]

F = TypeVar("F", bound=Callable[..., object])


def tls_options(f: F) -> F:
    """--tls-ca, --tls-cert, --tls-key: the fleet's CA and this machine's certificate and key (PEM)."""
    for name, what in reversed(
        (
            ("--tls-ca", "The fleet's CA certificate (layerbench fleet-certs makes one)."),
            ("--tls-cert", "This machine's certificate, signed by the fleet's CA."),
            ("--tls-key", "The key of --tls-cert (keep it 0600)."),
        )
    ):
        f = click.option(name, type=click.Path(path_type=Path, dir_okay=False), metavar="PEM", help=what)(f)
    return f
