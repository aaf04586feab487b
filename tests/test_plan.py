"""Planning: which cells a run has, and the order it takes them in."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbench.plugins import default_plugins
from layerbench.run.plan import Cell, order_cells, plan_cells
from layerbench.scenario import Scenario, load_scenario

SCENARIO = """
name = "{name}"
description = "A scenario to plan."
{params}
[image]
files = 3
[[step]]
op = "start"
"""


def _scenario(tmp_path: Path, name: str, params: str = "") -> Scenario:
    path = tmp_path / f"{name}.toml"
    path.write_text(SCENARIO.format(name=name, params=params))
    return load_scenario(path)


def _key(c: Cell) -> tuple[str, str, str, str]:
    return c.scenario.name, c.driver.name, str(c.params), c.backing


def test_a_cell_per_scenario_driver_parameter_set_and_backing(tmp_path: Path) -> None:
    swept = _scenario(tmp_path, "swept", "[params]\na = [1, 2, 3]\nb = ['x', 'y']")
    plain = _scenario(tmp_path, "plain")
    vfs, null = default_plugins().driver("vfs"), default_plugins().driver("null")
    cells = plan_cells([swept, plain], [vfs, null], ("ext4", "dir"), unavailable=lambda fs: None)
    # (6 sets + 1 set) x 2 drivers x the 2 backings each can sit on
    assert len(cells) == (6 + 1) * 2 * 2
    assert len({_key(c) for c in cells}) == len(cells)
    assert {c.backing for c in cells if c.driver is vfs} == {"ext4", "dir"}


def test_a_backing_the_driver_cannot_sit_on_or_unavailable_here_is_left_out(tmp_path: Path) -> None:
    plain = _scenario(tmp_path, "plain")
    null = default_plugins().driver("null")  # ext4 or dir
    assert [c.backing for c in plan_cells([plain], [null], ("xfs", "ext4"), unavailable=lambda fs: None)] == ["ext4"]
    no_ext4 = plan_cells([plain], [null], ("ext4", "dir"), unavailable=lambda fs: "no" if fs == "ext4" else None)
    assert [c.backing for c in no_ext4] == ["dir"]
    # none asked: the driver's first backing this machine can make
    assert [
        c.backing for c in plan_cells([plain], [null], (), unavailable=lambda fs: "no" if fs == "dir" else None)
    ] == ["ext4"]


def test_a_seed_decides_the_order(tmp_path: Path) -> None:
    swept = _scenario(tmp_path, "swept", "[params]\na = [1, 2, 3, 4, 5, 6, 7, 8]")
    cells = plan_cells([swept], [default_plugins().driver("null")], ("dir",), unavailable=lambda fs: None)
    planned = [_key(c) for c in cells]
    first = [_key(c) for c in order_cells(cells, "random", seed=1)]
    assert first == [_key(c) for c in order_cells(cells, "random", seed=1)]  # the same seed, the same order
    assert first != [_key(c) for c in order_cells(cells, "random", seed=2)]
    assert first != planned and sorted(first) == sorted(planned)  # shuffled, every cell once
    assert [_key(c) for c in order_cells(cells, "planned", seed=1)] == planned
    assert [_key(c) for c in cells] == planned  # the plan itself is left as it was


@pytest.mark.mounts  # the drivers' probes mount (erofs, composefs)
def test_all_drivers_leave_out_the_test_only_ones() -> None:
    from layerbench.drivers.null import NullDriver
    from layerbench.plugins import default_plugins
    from layerbench.run.plan import select_drivers

    plugins = default_plugins()
    runnable, skipped = select_drivers(plugins, ("all",))
    asked = {cls.name for cls in runnable} | set(skipped)
    assert "null" not in asked and NullDriver.test_only
    if "skeleton" in plugins.registry.drivers:  # installed as a user would (.ci/setup): an example, not a driver
        assert plugins.driver("skeleton").test_only and "skeleton" not in asked
    assert {"overlay2", "btrfs", "vfs", "erofs", "erofs-directio"} <= asked
    named, _ = select_drivers(plugins, ("null",))  # named, a test-only driver still runs
    assert [cls.name for cls in named] == ["null"]


def test_a_cell_sent_to_another_host_keeps_its_engine_address(tmp_path: Path) -> None:
    """--containerd-address in a fleet: the cell's containerd driver runs on that socket on the worker too
    (the worker probes it there); a driver without an engine takes none; a malformed address is refused."""
    from layerbench.errors import UserError

    plugins = default_plugins()
    scenario = _scenario(tmp_path, "plain")
    sock = str(tmp_path / "containerd.sock")  # none there: the worker's probe says so
    at = plugins.driver("containerd/overlayfs").at(sock)
    (cell,) = plan_cells([scenario], [at], ("ext4",), unavailable=lambda fs: None)
    sent = cell.to_plain()
    back = Cell.from_plain(sent, plugins)
    assert back.driver.name == "containerd/overlayfs" and back.driver.engine_address == sock
    (own,) = plan_cells([scenario], [plugins.driver("containerd/overlayfs")], ("ext4",), unavailable=lambda fs: None)
    assert Cell.from_plain(own.to_plain(), plugins).driver.engine_address is None
    with pytest.raises(UserError, match="engine_address"):
        Cell.from_plain({**sent, "engine_address": ["/x"]}, plugins)


def test_a_fleet_host_probes_containerds_drivers_at_the_runs_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """describe_host (a worker's answer to the client) checks --containerd-address's socket on its own host."""
    import os

    from layerbench.run.fleet import describe_host
    from layerbench.run.fleet_services import HOST_ENV, WORK_ROOT_ENV

    if os.geteuid() != 0:
        pytest.skip("a fleet host runs as root")
    monkeypatch.setenv(HOST_ENV, "h1")
    monkeypatch.setenv(WORK_ROOT_ENV, str(tmp_path))
    sock = tmp_path / "containerd.sock"
    sock.write_text("")  # a file, not a socket
    desc = describe_host(("containerd/overlayfs",), str(sock))
    assert desc["drivers"]["containerd/overlayfs"] == f"--containerd-address {sock}: not a unix socket"
    own = describe_host(("containerd/overlayfs",))
    assert "--containerd-address" not in str(own["drivers"]["containerd/overlayfs"])
