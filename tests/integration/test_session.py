"""open_driver / DriverSession: a driver on a fresh store, and everything released after, errors too."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from layerbench.drivers import VfsDriver
from layerbench.kernel import mountinfo
from layerbench.run.ledger import LEDGER_NAME, Ledger
from layerbench.run.session import DriverSession, open_driver

from ..conftest import require

pytestmark = pytest.mark.mounts
MiB = 1 << 20


class _SetupFails(VfsDriver):
    def setup(self) -> None:
        super().setup()
        raise OSError("injected at set-up")


def test_the_driver_is_set_up_in_its_private_home_on_a_mounted_store_and_all_goes_after(tmp_path: Path) -> None:
    require("vfs")
    with open_driver(VfsDriver, tmp_path / "w", "ext4", 64 * MiB) as session:
        mnt = session.store.mountpoint
        assert str(mnt) in mountinfo.points_below(str(tmp_path))
        assert session.driver.home == mnt / "vfs" == session.home
        assert stat.S_IMODE(session.home.stat().st_mode) == 0o700
        session.driver.create_layer("l0", None)  # set up: it takes layers
        image = session.store.image
        assert image.exists()
    assert mountinfo.points_below(str(tmp_path)) == []
    assert not image.exists() and not mnt.exists()


def test_a_failed_set_up_still_closes_the_driver_and_releases_the_store(tmp_path: Path) -> None:
    require("vfs")
    with pytest.raises(OSError, match="injected at set-up"), open_driver(_SetupFails, tmp_path / "w", "ext4", 64 * MiB):
        pass
    assert mountinfo.points_below(str(tmp_path)) == []
    assert list((tmp_path / "w").iterdir()) == []  # no backing file, no mount point


def test_an_own_work_directory_is_made_in_the_ledger_and_removed_by_close(tmp_path: Path) -> None:
    require("vfs")
    ledger = Ledger(tmp_path / LEDGER_NAME).open()
    session = DriverSession.new(VfsDriver, tmp_path / "cell", "ext4", 64 * MiB, ledger=ledger, own_workdir=True)
    try:
        session.open_store()
        assert session.start().ledger is ledger  # the driver writes its daemons in the run's ledger
    finally:
        session.close(unmount_home=True)
        ledger.close()
    assert not (tmp_path / "cell").exists() and mountinfo.points_below(str(tmp_path)) == []
    records = [json.loads(line) for line in (tmp_path / LEDGER_NAME).read_text().splitlines()]
    made = {(r["kind"], r["path"]) for r in records if r["op"] == "make"}
    released = {(r["kind"], r["path"]) for r in records if r["op"] == "release"}
    assert ("dir", str(tmp_path / "cell")) in made and made == released  # everything made was released
