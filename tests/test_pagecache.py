"""cachestat-based page-cache figures on real files, the page-cache claim, and the step's schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from layerbench.analysis.claims import HELD, NOT_HELD, NOT_MEASURED, evaluate
from layerbench.errors import UserError
from layerbench.kernel import pagecache
from layerbench.scenario import load_scenario

MiB = 1 << 20
CLAIM = "page-cache"  # the page-cache claim's id


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def cachestat() -> None:
    if (why := pagecache.unavailable()) is not None:
        pytest.skip(why)


def test_counts_the_pages_a_read_brings_in_and_a_hard_link_once(tmp_path: Path, cachestat: None) -> None:
    f = tmp_path / "d" / "data.bin"
    f.parent.mkdir()
    f.write_bytes(os.urandom(8 * MiB))
    os.link(f, tmp_path / "link.bin")
    _evict(f)
    assert pagecache.page_cache_bytes(tmp_path) == 0
    with open(tmp_path / "link.bin", "rb") as fh:
        fh.read(2 * MiB)  # readahead may bring a little more than asked, never the whole file
    part = pagecache.page_cache_bytes(tmp_path)
    assert 2 * MiB <= part < 8 * MiB
    f.read_bytes()
    assert pagecache.page_cache_bytes(tmp_path) == 8 * MiB  # one inode, two names: counted once
    pagecache.evict(tmp_path)
    assert pagecache.page_cache_bytes(tmp_path) == 0


def _cell(driver: str, containers: int, first: float, each: float | None) -> dict[str, Any]:
    metrics = {"page_cache_first_bytes": {"unit": "bytes", "samples": [first]}}
    if each is not None:
        metrics["page_cache_per_container_bytes"] = {"unit": "bytes", "samples": [each, each]}
    return {
        "scenario": "page-cache-sharing",
        "driver": driver,
        "params": {"containers": containers},
        "status": "ok",
        "image_bytes": 100 * MiB,
        "metrics": metrics,
        "outcomes": {},
    }


def _verdict(*cells: dict[str, Any]) -> dict[str, str]:
    styles = {"overlay2": "union", "fuse-overlayfs": "union", "btrfs": "snapshot", "vfs": "copy"}
    rows = evaluate({"drivers": {d: {"style": s} for d, s in styles.items()}, "cells": list(cells)})
    return next(r for r in rows if r["id"] == CLAIM)


def test_page_cache_claim_decided_with_figures() -> None:
    row = _verdict(
        _cell("overlay2", 20, 102 * MiB, 0.0),
        _cell("overlay2", 1, 102 * MiB, None),
        _cell("btrfs", 20, 102 * MiB, 102 * MiB),
        _cell("vfs", 5, 102 * MiB, 101 * MiB),
    )
    assert row["verdict"] == HELD
    assert "overlay2: first container 102 MiB, each further one 0 B (0.00 image) at 20 containers" in row["figures"]
    assert "btrfs: first container 102 MiB, each further one 102 MiB (1.02 image)" in row["figures"]
    # a union driver that caches per container (FUSE) does not keep one copy
    assert _verdict(_cell("fuse-overlayfs", 5, 204 * MiB, 102 * MiB))["verdict"] == NOT_HELD
    # a snapshot driver that added nothing would be a measurement error, not sharing
    assert _verdict(_cell("btrfs", 5, 102 * MiB, 0.0))["verdict"] == NOT_HELD
    assert _verdict()["verdict"] == NOT_MEASURED
    assert _verdict(_cell("vfs", 1, 102 * MiB, None))["verdict"] == NOT_MEASURED


def _scenario(tmp_path: Path, step: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(
        f'name = "s"\ndescription = "d"\n[image]\nfiles = 10\n[[step]]\nop = "start"\n'
        f'[[step]]\nop = "page_cache"\n{step}\n'
    )
    return p


def test_page_cache_step_schema(tmp_path: Path) -> None:
    load_scenario(_scenario(tmp_path, "fraction = 0.5"))
    with pytest.raises(UserError, match=r"step\[1\]: op 'page_cache' needs exactly one of path, glob, fraction"):
        load_scenario(_scenario(tmp_path, ""))
    with pytest.raises(UserError, match=r"step\[1\]\.measure: op 'page_cache' records fixed metrics"):
        load_scenario(_scenario(tmp_path, 'fraction = 1.0\nmeasure = "x_ns"'))
