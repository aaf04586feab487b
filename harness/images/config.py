"""An image's OCI configuration: what a runtime starts (Entrypoint, Cmd, Env, WorkingDir, User) and when
it is ready (the label `org.layerbench.ready`).

Read from an image's config blob (harness/images/oci.py) and written into the images
layerbench builds (harness/images/debian.py). The ready condition is one of `exit` (the
process exits 0), `log:TEXT` (a line of its output contains TEXT) or `http:PORT/PATH` (the
first answer to a GET made inside the container).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from layerbench.errors import UserError

__all__ = ["ImageConfig", "READY_LABEL", "parse_config", "check_ready", "config_of"]

READY_LABEL = "org.layerbench.ready"
_READY = re.compile(r"^(exit|log:.{1,200}|http:\d{1,5}/[!-~]{0,200})$")
_MAX_ITEMS = 4096  # argv / env entries an image config may hold
_MAX_TEXT = 64 << 10  # bytes of one of them


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config (`config` in the image's config blob)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = "/"
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> str | None:
        """The ready condition (`exit`, `log:TEXT`, `http:PORT/PATH`), or None when the image names none."""
        return self.labels.get(READY_LABEL)

    def argv(self) -> tuple[str, ...]:
        """What the container runs: Entrypoint then Cmd (Docker's rule)."""
        return self.entrypoint + self.cmd

    def to_oci(self) -> dict[str, Any]:
        """The `config` object of an OCI image config, as layerbench writes it."""
        out: dict[str, Any] = {}
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.env:
            out["Env"] = list(self.env)
        if self.working_dir != "/":
            out["WorkingDir"] = self.working_dir
        if self.user:
            out["User"] = self.user
        if self.labels:
            out["Labels"] = dict(sorted(self.labels.items()))
        return out


def check_ready(text: str, where: str) -> str:
    """`text` if it is a ready condition, else a UserError naming `where` and the forms allowed."""
    if not _READY.match(text) or (text.startswith("http:") and not 0 < int(text[5:].split("/", 1)[0]) < 65536):
        raise UserError(f"{where}: ready condition {text[:80]!r}: expected exit, log:TEXT or http:PORT/PATH")
    return text


def _strings(label: str, value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise UserError(f"{label}: config {key} is not a list of at most {_MAX_ITEMS} strings")
    if not all(isinstance(v, str) and len(v) <= _MAX_TEXT and "\0" not in v for v in value):
        raise UserError(f"{label}: config {key} holds a value that is not a string (or is too long, or has a NUL)")
    return tuple(value)


def _text(label: str, value: Any, key: str, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > _MAX_TEXT or "\0" in value:
        raise UserError(f"{label}: config {key} is not a string")
    return value


def parse_config(label: str, blob: Any) -> ImageConfig:
    """The runtime config of an OCI / Docker image config blob (parsed JSON); `label` names it in errors."""
    if not isinstance(blob, dict):
        raise UserError(f"{label}: the image config is not a JSON object")
    cfg = blob.get("config") or {}
    if not isinstance(cfg, dict):
        raise UserError(f"{label}: the image config's `config` is not an object")
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= _MAX_TEXT for k, v in labels.items()
    ):
        raise UserError(f"{label}: config Labels is not an object of strings")
    if len(labels) > _MAX_ITEMS:
        raise UserError(f"{label}: config Labels has more than {_MAX_ITEMS} entries")
    if READY_LABEL in labels:
        check_ready(labels[READY_LABEL], f"{label}: label {READY_LABEL}")
    return ImageConfig(
        entrypoint=_strings(label, cfg.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(label, cfg.get("Cmd"), "Cmd"),
        env=_strings(label, cfg.get("Env"), "Env"),
        working_dir=_text(label, cfg.get("WorkingDir"), "WorkingDir", "/"),
        user=_text(label, cfg.get("User"), "User", ""),
        labels=dict(labels),
    )


def config_of(image: object) -> ImageConfig | None:
    """The config an image carries (an image read from an OCI layout, an archive or a registry), or None
    (a synthetic image, a host directory, a plugin's image without one)."""
    config = getattr(image, "config", None)
    return config if isinstance(config, ImageConfig) else None
