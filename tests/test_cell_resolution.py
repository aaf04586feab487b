"""A cell resolves its scenario's images and steps once, however many parts of the run ask."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from layerbench.images.image import Image
from layerbench.plugins import default_plugins
from layerbench.run.cell import run_cell
from layerbench.run.estimates import check_disk, estimate_bytes, estimate_inodes
from layerbench.run.plan import Cell
from layerbench.run.sampling import Sampling
from layerbench.scenario import Scenario, Step, load_scenario

SCENARIO = """
name = "once"
description = "An image, a further one pre-built and one imported, and steps."
[image]
layers = 2
files = 10
[[images]]
name = "app"
base = "base"
files = 5
[[images]]
name = "pulled"
files = 4
prebuilt = false
[[step]]
op = "build"
image = "pulled"
[[step]]
op = "start"
[[step]]
op = "write"
path = "w{i}"
count = 3
bytes = 100
"""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the scenario's resolutions: `image`, `steps`, and `images` pre-built or not."""
    seen: Counter[str] = Counter()
    image, images, steps = Scenario.image, Scenario.images, Scenario.steps

    def counted_image(self: Scenario, params: dict[str, Any]) -> Image:
        seen["image"] += 1
        return image(self, params)

    def counted_images(self: Scenario, params: dict[str, Any], prebuilt: bool = True) -> Any:
        seen[f"images prebuilt={prebuilt}"] += 1
        return images(self, params, prebuilt)

    def counted_steps(self: Scenario, params: dict[str, Any]) -> list[Step]:
        seen["steps"] += 1
        return steps(self, params)

    monkeypatch.setattr(Scenario, "image", counted_image)
    monkeypatch.setattr(Scenario, "images", counted_images)
    monkeypatch.setattr(Scenario, "steps", counted_steps)
    return seen


def _cell(tmp_path: Path) -> Cell:
    path = tmp_path / "once.toml"
    path.write_text(SCENARIO)
    s = load_scenario(path)
    return Cell(s, default_plugins().driver("null"), s.param_sets()[0], "dir")


@pytest.mark.mounts
def test_estimates_and_a_run_resolve_the_cell_once(tmp_path: Path, calls: Counter[str]) -> None:
    cell = _cell(tmp_path)
    estimate_bytes(cell)
    estimate_inodes(cell)
    check_disk([cell], tmp_path, lambda line: None)
    out = run_cell(cell, tmp_path / "cell", Sampling(samples=2, warmup=1, min_time_s=0.0, cold=False))
    assert out["status"] == "ok", out["error"]
    assert calls == {"image": 1, "steps": 1, "images prebuilt=True": 1, "images prebuilt=False": 1}


def test_a_pickled_cell_leaves_what_it_resolved_behind(tmp_path: Path) -> None:
    cell = _cell(tmp_path)
    estimate_bytes(cell)
    assert "image" in vars(cell)
    copy = pickle.loads(pickle.dumps(cell))
    assert copy == cell and "image" not in vars(copy)
    assert estimate_bytes(copy) == estimate_bytes(cell)
