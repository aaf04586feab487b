from __future__ import annotations

from typing import Any

from layerbench.analysis.claims import CLAIMS, HELD, NOT_HELD, NOT_MEASURED, evaluate
from layerbench.analysis.results_model import run_document

MiB = 1 << 20
STYLES = {
    "overlay2": "union",
    "btrfs": "snapshot",
    "vfs": "copy",
    "overlay2-rootless": "union",
    "fuse-overlayfs": "union",
}


def cell(scenario: str, driver: str, params: dict[str, Any], **metrics: list[float]) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "driver": driver,
        "params": params,
        "status": "ok",
        "image_bytes": 100 * MiB,
        "metrics": {m: {"unit": "x", "samples": v} for m, v in metrics.items()},
        "outcomes": {},
    }


def doc(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"drivers": {d: {"style": s} for d, s in STYLES.items()}, "cells": list(cells)}


def verdicts(d: dict[str, Any]) -> dict[str, str]:
    """Each claim's verdict by its id (a claim decided per host or backing is not one row here)."""
    rows = evaluate(d)
    assert len({r["id"] for r in rows}) == len(rows)
    return {row["id"]: row["verdict"] for row in rows}


def test_nothing_measured() -> None:
    assert verdicts(doc()) == {c.id: NOT_MEASURED for c in CLAIMS}


def test_every_claim_has_its_own_id() -> None:
    ids = [c.id for c in CLAIMS]
    assert len(set(ids)) == len(ids) and "copy-up" in ids and "page-cache" in ids


def sharing(vfs_each: float, overlay_each: float) -> list[dict[str, Any]]:
    return [
        cell(
            "layer-sharing",
            "vfs",
            {"containers": 20},
            disk_bytes=[(300 + 20 * 100 * vfs_each) * MiB],
            image_disk_bytes=[300 * MiB],
            startup_ns=[9e7],
        ),
        cell(
            "layer-sharing",
            "overlay2",
            {"containers": 20},
            disk_bytes=[(100 + 20 * 100 * overlay_each) * MiB],
            image_disk_bytes=[100 * MiB],
            startup_ns=[3e5],
        ),
    ]


def test_sharing_and_vfs_worst_decided_from_layer_sharing() -> None:
    held = verdicts(doc(*sharing(vfs_each=0.96, overlay_each=0.001)))
    assert held["sharing"] == HELD and held["vfs-worst"] == HELD
    assert verdicts(doc(*sharing(vfs_each=0.96, overlay_each=0.2)))["sharing"] == NOT_HELD


def test_copy_up_needs_growth_on_union_and_none_on_snapshot() -> None:
    def cells(btrfs_big: float) -> list[dict[str, Any]]:
        out = []
        for driver, small, big in (("overlay2", 3e4, 2e8), ("btrfs", 3e4, btrfs_big)):
            for size, t in ((4096, small), (256 * MiB, big)):
                grew = size if driver == "overlay2" else 4096
                out.append(
                    cell(
                        "copy-up",
                        driver,
                        {"file_size": size, "mode": "append", "depth": 1},
                        copy_up_ns=[t],
                        disk_bytes=[MiB + grew],
                        image_disk_bytes=[MiB],
                    )
                )
        return out

    assert verdicts(doc(*cells(btrfs_big=4e4)))["copy-up"] == HELD
    assert verdicts(doc(*cells(btrfs_big=4e6)))["copy-up"] == NOT_HELD


def test_delete_and_commit_and_volumes() -> None:
    d = cell("delete-in-later-layer", "overlay2", {})
    d["image_layers_disk_bytes"] = [2 * MiB, 66 * MiB, 66 * MiB]
    d["outcomes"] = {"step[1] stat": {"ENOENT": 5}}
    c = cell("commit", "overlay2", {}, commit_layer_bytes=[48 * MiB], written_bytes=[47 * MiB])
    v = cell(
        "write-heavy",
        "overlay2",
        {},
        overwrite_container_ns=[7e7],
        overwrite_volume_ns=[1.5e4],
        overwrite_tmpfs_ns=[9e3],
    )
    got = verdicts(doc(d, c, v))
    assert (got["delete"], got["commit"], got["volumes"]) == (HELD, HELD, HELD)
    d["image_layers_disk_bytes"] = [2 * MiB, 66 * MiB, 3 * MiB]  # the image shrank: the claim fails
    c["metrics"]["commit_layer_bytes"]["samples"] = [150 * MiB]  # a full copy
    got = verdicts(doc(d, c, v))
    assert (got["delete"], got["commit"]) == (NOT_HELD, NOT_HELD)


def test_a_backing_sweep_decides_each_claim_per_backing() -> None:
    # The bug: ext4's and XFS's cells merged into one, and the copy-up claim was decided on XFS's
    # figures alone ("did not hold"), hiding ext4's 111 ms copy of a 64 MiB file.
    from pathlib import Path

    from layerbench.analysis import results

    doc = results.read(Path(__file__).parent.parent / "results" / "reference" / "20261130T081209Z_backing.json")
    rows = [r for r in evaluate(doc) if r["id"] == "copy-up"]
    by_backing = {r["backing"]: r for r in rows}
    assert set(by_backing) == {"ext4", "xfs"}
    assert by_backing["ext4"]["verdict"] == HELD
    assert "overlay2: first append 111 ms at 64 MiB" in by_backing["ext4"]["figures"]
    # overlayfs on XFS copies up by sharing extents (reflink): the copy does not grow with the size
    assert by_backing["xfs"]["verdict"] == NOT_HELD and "container layer +12 KiB" in by_backing["xfs"]["figures"]
    # a claim measured nowhere is said once, not once per backing
    assert [r["backing"] for r in evaluate(doc) if r["id"] == "delete"] == [""]


def claim(d: dict[str, Any], cid: str) -> dict[str, str]:
    """The row of the claim whose id is `cid`."""
    return next(r for r in evaluate(d) if r["id"] == cid)


def image_cell(driver: str, added: float) -> dict[str, Any]:
    c = cell("image-sharing", driver, {})
    c["images"] = [
        {
            "name": n,
            "base": "base",
            "layers": 2,
            "bytes": 8 * MiB,
            "base_bytes": 64 * MiB,
            "disk_bytes": 0,
            "added_bytes": int(added * MiB),
        }
        for n in ("app-a", "app-b")
    ]
    return c


def test_images_share_their_base_unless_copied() -> None:
    row = claim(doc(image_cell("overlay2", 8.2), image_cell("vfs", 150)), "images")
    assert row["verdict"] == HELD
    assert "overlay2: app-a +8.2 MiB, app-b +8.2 MiB (own layers 8 MiB, base 64 MiB)" in row["figures"]
    assert claim(doc(image_cell("overlay2", 72), image_cell("vfs", 150)), "images")["verdict"] == NOT_HELD
    assert claim(doc(image_cell("overlay2", 8), image_cell("vfs", 9)), "images")["verdict"] == NOT_HELD
    assert claim(doc(cell("image-sharing", "overlay2", {})), "images")["verdict"] == NOT_MEASURED


def test_remove_returns_the_store_to_the_image() -> None:
    def one(after: float) -> dict[str, Any]:
        return doc(
            cell(
                "container-remove",
                "btrfs",
                {},
                image_disk_bytes=[8 * MiB],
                with_container_disk_bytes=[13 * MiB],
                after_remove_disk_bytes=[after * MiB],
            )
        )

    assert claim(one(8.1), "remove")["verdict"] == HELD  # 100 KiB of metadata
    row = claim(one(12), "remove")
    assert row["verdict"] == NOT_HELD and "12 MiB after remove, image alone 8 MiB" in row["figures"]


def test_tmpfs_stays_off_the_store_and_bind_lands_on_it() -> None:
    def kinds(tmpfs_grew: float, bind_grew: float) -> dict[str, Any]:
        return doc(
            *(
                cell(
                    "volume-writes",
                    "overlay2",
                    {"kind": k},
                    before_write_disk_bytes=[2 * MiB],
                    after_write_disk_bytes=[(2 + g) * MiB],
                    written_bytes=[48 * MiB],
                )
                for k, g in (("tmpfs", tmpfs_grew), ("bind", bind_grew))
            )
        )

    assert claim(kinds(0, 48.1), "tmpfs")["verdict"] == HELD
    assert claim(kinds(48, 48), "tmpfs")["verdict"] == NOT_HELD  # the tmpfs wrote to the disk
    assert claim(kinds(0, 0), "tmpfs")["verdict"] == NOT_HELD  # the bind volume was not on the store
    only_tmpfs = doc(
        cell(
            "volume-writes",
            "overlay2",
            {"kind": "tmpfs"},
            before_write_disk_bytes=[0],
            after_write_disk_bytes=[0],
            written_bytes=[48 * MiB],
        )
    )
    assert claim(only_tmpfs, "tmpfs")["verdict"] == NOT_MEASURED


def test_nearest_layer_fails_on_a_cell_error_naming_the_file() -> None:
    good = cell("nearest-layer", "overlay2", {}, expect_files=[1, 1, 1, 1])
    assert claim(doc(good), "nearest")["verdict"] == HELD
    bad = {
        **cell("nearest-layer", "vfs", {}),
        "status": "error",
        "error": "step[1] expect: ContentMismatch: etc/app.conf: the merged view reads sha256 0a1b, not layer 2's copy",
    }
    row = claim(doc(good, bad), "nearest")
    assert row["verdict"] == NOT_HELD and "etc/app.conf" in row["figures"]


def test_rootless_kernel_overlay_against_fuse_needs_both_drivers() -> None:
    def pair(kernel_start: float, fuse_start: float) -> list[dict[str, Any]]:
        out = []
        for driver, start, copy in (("overlay2-rootless", kernel_start, 5e7), ("fuse-overlayfs", fuse_start, 2e8)):
            out.append(cell("startup", driver, {"layers": 1, "files": 1000}, startup_ns=[start]))
            for size, t in ((4096, copy / 1000), (64 * MiB, copy)):
                out.append(cell("copy-up", driver, {"file_size": size, "mode": "append", "depth": 1}, copy_up_ns=[t]))
        return out

    row = claim(doc(*pair(2e6, 9e6)), "rootless")
    assert row["verdict"] == HELD
    assert (
        "copy-up (depth=1, file_size=67108864, mode=append): overlay2-rootless 50 ms, fuse-overlayfs 200 ms"
        in row["figures"]
    )
    assert claim(doc(*pair(2e7, 9e6)), "rootless")["verdict"] == NOT_HELD
    one_driver = [c for c in pair(2e6, 9e6) if c["driver"] == "overlay2-rootless"]
    assert claim(doc(*one_driver), "rootless")["verdict"] == NOT_MEASURED


def test_pulling_dominates_is_decided_per_driver_and_link_sample_by_sample() -> None:
    fast = cell(
        "cold-start",
        "overlay2",
        {"link": "loopback"},
        pull_ns=[1e8, 1e8],
        unpack_ns=[1e8, 1e8],
        cold_start_ns=[1e9, 1e9],
    )
    slow = cell(
        "cold-start",
        "overlay2",
        {"link": "100mbit"},
        pull_ns=[6e9, 6e9],
        unpack_ns=[1e9, 1e9],
        cold_start_ns=[8e9, 8e9],
    )
    row = claim(doc(slow), "pull-dominates")
    assert row["verdict"] == HELD and "overlay2 at 100mbit: 88%" in row["figures"] and "download 75%" in row["figures"]
    row = claim(doc(fast, slow), "pull-dominates")
    assert row["verdict"] == NOT_HELD and "overlay2 at loopback: 20%" in row["figures"]
    assert claim(doc(cell("cold-start", "vfs", {}, pull_ns=[1.0])), "pull-dominates")["verdict"] == NOT_MEASURED


def test_a_present_base_is_not_fetched_again() -> None:
    shared = cell(
        "pull-shared-base",
        "overlay2",
        {"link": "loopback"},
        second_pulled_bytes=[254],
        second_image_pull_bytes=[MiB],
        second_pulled_layer0_bytes=[0],
    )
    row = claim(doc(shared), "base-present")
    assert row["verdict"] == HELD and "fetched 254 B of its 1 MiB (0.0%)" in row["figures"]
    fetched = cell(
        "pull-shared-base",
        "vfs",
        {"link": "loopback"},
        second_pulled_bytes=[MiB],
        second_image_pull_bytes=[MiB],
        second_pulled_layer0_bytes=[MiB - 254],
    )
    assert claim(doc(shared, fetched), "base-present")["verdict"] == NOT_HELD


def test_the_commit_claim_on_btrfs_is_decided_on_what_the_layer_holds_alone() -> None:
    def commit(**metrics: list[float]) -> list[dict[str, str]]:
        if "layer_alone_disk_bytes" in metrics:  # the usage step reads the store with the image in it
            metrics["layer_alone_disk_bytes"] = [v + 30 * MiB for v in metrics["layer_alone_disk_bytes"]]
        metrics["image_disk_bytes"] = [30 * MiB]
        rows = evaluate(doc(cell("commit", "btrfs", {}, written_bytes=[47.7 * MiB], **metrics)))
        return [r for r in rows if r["id"] == "commit"]

    # beside the live container the snapshot shares every extent: 32 KiB decided nothing; alone it holds the changes
    (row,) = commit(commit_layer_bytes=[32 * 1024], layer_alone_disk_bytes=[47.9 * MiB])
    assert row["verdict"] == HELD
    assert row["figures"] == "btrfs: new layer 47.9 MiB alone for 47.7 MiB of changes on a 100 MiB image"
    (row,) = commit(commit_layer_bytes=[32 * 1024], layer_alone_disk_bytes=[32 * 1024])  # the changes went missing
    assert row["verdict"] == NOT_HELD
    (row,) = commit(commit_layer_bytes=[32 * 1024], layer_alone_disk_bytes=[148 * MiB])  # the image copied too
    assert row["verdict"] == NOT_HELD


def test_a_start_reads_a_small_part_of_its_image_is_decided_per_driver() -> None:
    python = {"recipe": "python", "link": "loopback", "runtime": "crun"}
    overlay = cell("cold-start", "overlay2", python, read_fraction=[0.08, 0.09, 0.07], read_bytes=[8 * MiB] * 3)
    row = claim(doc(overlay), "reads-little")
    assert row["verdict"] == HELD
    assert row["figures"] == "overlay2 python, link loopback, runtime crun: 8.0% (8 MiB of 100 MiB)"
    vfs = cell("cold-start", "vfs", python, read_fraction=[1.0], read_bytes=[100 * MiB])
    row = claim(doc(overlay, vfs), "reads-little")
    assert row["verdict"] == NOT_HELD and "vfs python, link loopback, runtime crun: 100.0%" in row["figures"]
    assert claim(doc(cell("cold-start", "vfs", {})), "reads-little")["verdict"] == NOT_MEASURED


def test_claims_are_data_picked_by_id() -> None:
    """Reports and docs quote these ids: each claim says what it reads and where it comes from."""
    from layerbench.analysis.claims import claim as by_id

    assert {c.id for c in CLAIMS} == {
        "sharing",
        "copy-up",
        "delete",
        "commit",
        "vfs-worst",
        "volumes",
        "page-cache",
        "images",
        "remove",
        "tmpfs",
        "nearest",
        "rootless",
        "pull-dominates",
        "base-present",
        "reads-little",
    }
    assert all(c.statement and c.source and c.metrics for c in CLAIMS)
    copy_up = by_id("copy-up")
    assert copy_up.scenario == "copy-up" and "copy_up_ns" in copy_up.metrics
    d = doc(
        *(
            cell("copy-up", "overlay2", {"file_size": size, "mode": "append", "depth": 1}, copy_up_ns=[t])
            for size, t in ((4096, 3e4), (256 * MiB, 2e8))
        )
    )
    # one claim alone decides the same as among all of them
    assert evaluate(d, [copy_up]) == [claim(d, "copy-up")]
    assert copy_up(run_document(d)) == (claim(d, "copy-up")["verdict"], claim(d, "copy-up")["figures"])
    try:
        by_id("nope")
    except KeyError as exc:
        assert "copy-up" in str(exc)
    else:
        raise AssertionError("an unknown claim id was accepted")


def test_volumes_is_decided_by_the_drivers_that_measured_it() -> None:
    """A union driver without the three overwrite metrics is left out (it made the claim not measured)."""

    def heavy(driver: str, **metrics: list[float]) -> dict[str, Any]:
        return cell("write-heavy", driver, {}, **metrics)

    full = heavy("overlay2", overwrite_container_ns=[7e7], overwrite_volume_ns=[1.5e4], overwrite_tmpfs_ns=[9e3])
    partial = heavy("fuse-overlayfs", overwrite_container_ns=[7e7], overwrite_volume_ns=[1.5e4])
    row = claim(doc(full, partial), "volumes")
    assert row["verdict"] == HELD and row["figures"].startswith("overlay2: overwrite in the container layer 70 ms")
    assert "fuse-overlayfs" not in row["figures"]
    assert claim(doc(partial), "volumes")["verdict"] == NOT_MEASURED
    slow_volume = heavy("overlay2", overwrite_container_ns=[7e7], overwrite_volume_ns=[1e7], overwrite_tmpfs_ns=[9e3])
    assert claim(doc(slow_volume), "volumes")["verdict"] == NOT_HELD
