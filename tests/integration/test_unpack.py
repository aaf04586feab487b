"""The unpack scenario on real drivers: every sample imports the compressed OCI image onto a store
that does not hold it, so a content-addressed store (composefs) stores every byte as an overlay does,
and removing the imported layers gives the objects back (the next sample writes as much again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbench.environment import RunEnvironment, applied
from layerbench.plugins import default_plugins
from layerbench.run.runner import Cell, run_cell
from layerbench.run.sampling import Sampling
from layerbench.scenario import builtin_scenarios, load_scenario

from ..conftest import require

pytestmark = pytest.mark.mounts
TWICE = Sampling(samples=2, warmup=0, min_time_s=0.0, cold=False)


@pytest.mark.parametrize("name", ["overlay2", "vfs", "btrfs", "composefs", "erofs"])
def test_every_sample_unpacks_the_whole_image_first_hand(name: str, tmp_path: Path) -> None:
    require(name)
    scenario = load_scenario(builtin_scenarios()["unpack"], {"bytes": [2_000_000], "compression": ["zstd"]})
    params = scenario.param_sets()[0]
    with applied(RunEnvironment(tmp_path / "work")):  # the layout cache under this work root
        [(_, _, pulled)] = scenario.images(params, prebuilt=False)
        cls = default_plugins().driver(name)
        out = run_cell(Cell(scenario, cls, params, cls.backings[0]), tmp_path / "cell", TWICE)
    assert out["status"] == "ok", out["error"]
    assert not (tmp_path / "cell").exists()
    metrics = out["metrics"]
    assert len(metrics["unpack_ns"]["samples"]) == 2 and len(metrics["startup_ns"]["samples"]) == 2
    assert pulled.total_bytes == 2_000_000 and out["image_bytes"] < 0.05 * pulled.total_bytes  # not pre-built
    first, second = metrics["build_disk_bytes"]["samples"]
    assert first >= 0.9 * pulled.total_bytes  # a first import: every byte stored, none deduplicated
    # The first sample's layers (and objects) went with it: the second stores every byte again. It may
    # store less than the first, which also made what a store keeps (composefs's objects/xx fan-out
    # directories, a 4 KiB block each on a 4 KiB-block store), never less than the image.
    assert second >= 0.9 * pulled.total_bytes and second <= 1.1 * first
    assert list((tmp_path / "work" / "oci-cache").glob("*-zstd/index.json"))
