"""The run's environment: what a cell acts on, as shipped to a fleet's host (untrusted there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbench import environment
from layerbench.environment import RunEnvironment
from layerbench.errors import UserError
from layerbench.run.plan import RunConfig


def test_a_run_config_gives_its_cells_its_loop_io_and_image_limit(tmp_path: Path) -> None:
    env = RunConfig(loop_io="buffered", max_image_bytes=1 << 20).environment(tmp_path)
    assert env == RunEnvironment(tmp_path, "buffered", 1 << 20) and not env.direct_io


def test_shipped_to_a_host_it_takes_the_hosts_work_root(tmp_path: Path) -> None:
    sent = RunEnvironment(Path("/client/root"), "buffered", 4096).to_plain()
    assert "work_root" not in sent
    assert RunEnvironment.from_plain(sent, tmp_path) == RunEnvironment(tmp_path, "buffered", 4096)


@pytest.mark.parametrize(
    "plain, message",
    [
        ({"loop_io": "cached"}, r"^--loop-io 'cached': allowed: direct, buffered$"),
        ({"max_image_bytes": -1}, r"^--max-image-bytes -1: expected a positive number of bytes$"),
        ({"max_image_bytes": "1G"}, r"^--max-image-bytes '1G': expected a positive number of bytes$"),
        ({"max_image_bytes": True}, r"^--max-image-bytes True: expected a positive number of bytes$"),
        ({"work_root": "/etc"}, r"^a cell's environment must be loop_io and max_image_bytes, not "),
        (["direct"], r"^a cell's environment must be loop_io and max_image_bytes, not "),
    ],
)
def test_a_bad_environment_from_a_peer_is_one_line(plain: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=message):
        RunEnvironment.from_plain(plain, tmp_path)  # type: ignore[arg-type]


def test_applied_is_scoped_and_nests(tmp_path: Path) -> None:
    outer, inner = RunEnvironment(tmp_path, "buffered"), RunEnvironment(tmp_path, max_image_bytes=1)
    assert environment.current() == RunEnvironment()
    with environment.applied(outer):
        with environment.applied(inner):
            assert environment.current() is inner
        assert environment.current() is outer
    assert environment.current() == RunEnvironment()
