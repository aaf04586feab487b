"""The claims people make about image layers, checked against a run's own numbers.

Each claim is data (`Claim`, harness/analysis/claim_evaluators.py): its id, the statement,
where it comes from, the scenario and metrics it reads, and how it is decided, by one of
three evaluators (`Each`, `Extremes`, `Faster`) with the comparison written beside it.
Each gives held, did not hold, or not measured, with the figures that decide it. The seed
tutorial's claims (layers shared between containers, copy-on-write into the container layer,
deletes that do not shrink an image, commit as a new layer), the ones users ask about
(vfs's cost, volumes bypassing the driver, memory), and Slacker's (FAST '16) about pulls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from layerbench.analysis.claim_evaluators import (
    HELD,
    NOT_HELD,
    NOT_MEASURED,
    Claim,
    Each,
    Extremes,
    Faster,
    Rule,
    Select,
    Values,
)
from layerbench.analysis.results_model import CellResult, RunDocument, median, run_document
from layerbench.units import human

__all__ = [
    "Claim",
    "Each",
    "Extremes",
    "Faster",
    "Select",
    "evaluate",
    "claim",
    "where",
    "claims_text",
    "CLAIMS",
    "HELD",
    "NOT_HELD",
    "NOT_MEASURED",
    "SMALL_READ",
]

#: a store's metadata moves by a few blocks: 256 KiB, or 1%, counts as unchanged
_SLACK = 256 << 10
#: "a small part": a start that reads under this fraction of its image (Slacker, FAST '16: 6.4% on average)
SMALL_READ = 0.2


# ---- what each claim reads from a subject (a cell, or a driver's cells)


def _medians(**metrics: str) -> Callable[[CellResult, RunDocument], Values | None]:
    """The medians of `metrics` (name=metric) of one cell; None when one is missing."""

    def read(cell: CellResult, run: RunDocument) -> Values | None:
        values = {name: cell.median(metric) for name, metric in metrics.items()}
        return None if any(v is None for v in values.values()) else values

    return read


def _most(param: str) -> Callable[[list[CellResult]], CellResult]:
    """A driver's cell at the largest value of `param`."""
    return lambda cells: max(cells, key=lambda c: c.params.get(param, 0))


def _sharing(cell: CellResult, run: RunDocument) -> Values | None:
    n, disk, image = cell.params.get("containers", 1), cell.median("disk_bytes"), cell.median("image_disk_bytes")
    if disk is None or image is None or not cell.get("image_bytes"):
        return None
    return {"n": n, "grew": disk - image, "each": (disk - image) / n / cell.get("image_bytes")}


def _copy_up(cells: list[CellResult], run: RunDocument) -> Values | None:
    """The first append at the smallest and the largest file size, and what the big one added to the store."""
    mine = {c.params["file_size"]: c for c in cells}
    if len(mine) < 2:
        return None
    small, big = mine[min(mine)], mine[max(mine)]
    a, b = small.median("copy_up_ns"), big.median("copy_up_ns")
    if not a or b is None:
        return None
    grew = (big.median("disk_bytes") or 0) - (big.median("image_disk_bytes") or 0)
    return {"small": a, "big": b, "small_size": min(mine), "big_size": max(mine), "ratio": b / a, "grew": grew}


def _delete(cell: CellResult, run: RunDocument) -> Values | None:
    layers = cell.get("image_layers_disk_bytes") or []
    if len(layers) < 2:
        return None
    hidden = sum(n for label, o in cell.outcomes.items() if "stat" in label for e, n in o.items() if e == "ENOENT")
    return {"peak": max(layers[:-1]), "final": layers[-1], "hidden": hidden}


def _commit(cell: CellResult, run: RunDocument) -> Values | None:
    # what the layer holds alone, once the container is removed (a btrfs snapshot shares every extent with
    # the live container, so what the commit added beside it is next to nothing and decides nothing)
    # (the usage step reads the store over the empty store's: the image is in it, taken off here)
    store, image = cell.median("layer_alone_disk_bytes"), cell.median("image_disk_bytes")
    alone = None if store is None or image is None else store - image
    written = cell.median("written_bytes")
    layer = alone if alone is not None else cell.median("commit_layer_bytes")
    if layer is None or not written:
        return None
    return {"layer": layer, "alone": alone, "written": written, "image": cell.get("image_bytes", 0)}


def _page_cache(cell: CellResult, run: RunDocument) -> Values | None:
    image, first, each = (
        cell.get("image_bytes"),
        cell.median("page_cache_first_bytes"),
        cell.median("page_cache_per_container_bytes"),
    )
    if not image or first is None or each is None:
        return None
    return {"image": image, "first": first, "each": each, "n": cell.params.get("containers")}


def _images(cell: CellResult, run: RunDocument) -> Values | None:
    built = [i for i in cell.get("images") if i.get("base_bytes")]
    if not built:
        return None
    added = ", ".join(f"{i['name']} +{human(i['added_bytes'], 'bytes')}" for i in built)
    return {"built": built, "added": added, "own": built[0]["bytes"], "base": built[0]["base_bytes"]}


def _tmpfs(cells: list[CellResult], run: RunDocument) -> Values | None:
    """What the write added to the store's use, on a tmpfs and on a bind volume (`kind`)."""
    grew, written = {}, {}
    for c in cells:
        before, after = c.median("before_write_disk_bytes"), c.median("after_write_disk_bytes")
        if before is not None and after is not None:
            grew[c.params.get("kind")], written[c.params.get("kind")] = after - before, c.median("written_bytes") or 0
    if "tmpfs" not in grew or "bind" not in grew:
        return None
    return {"tmpfs": grew["tmpfs"], "bind": grew["bind"], "written_tmpfs": written["tmpfs"], "written": written["bind"]}


def _nearest(cell: CellResult, run: RunDocument) -> Values | None:
    checked = len(cell.samples("expect_files"))
    if cell.status == "error":
        return {"error": cell.error, "checked": checked}
    return {"error": None, "checked": checked} if checked else None


def _link(cell: CellResult) -> str:
    return str(cell.params.get("link", "loopback"))


def _pull_share(cell: CellResult, run: RunDocument) -> Values | None:
    """The pull's share (download + the unpack not hidden behind it) of each cold start, sample by sample."""
    pulls, unpacks, whole = (cell.samples(m) for m in ("pull_ns", "unpack_ns", "cold_start_ns"))
    n = min(len(pulls), len(unpacks), len(whole))
    shares = [(pulls[i] + unpacks[i]) / whole[i] for i in range(n) if whole[i] > 0]
    if not shares:
        return None
    download = median(pulls[i] / whole[i] for i in range(n) if whole[i] > 0)
    return {"link": _link(cell), "share": median(shares), "whole": median(whole), "download": download}


def _base_present(cell: CellResult, run: RunDocument) -> Values | None:
    got, whole = cell.median("second_pulled_bytes"), cell.median("second_image_pull_bytes")
    base = cell.median("second_pulled_layer0_bytes")
    if got is None or not whole or base is None:
        return None
    return {"link": _link(cell), "got": got, "whole": whole, "base": base}


def _reads_little(cell: CellResult, run: RunDocument) -> Values | None:
    fraction, read = cell.median("read_fraction"), cell.median("read_bytes")
    if fraction is None or read is None:
        return None
    image = f" {cell.params['recipe']}" if "recipe" in cell.params else ""
    whole = f" of {human(read / fraction, 'bytes')}" if fraction > 0 else ""
    # every parameter of the cell but the image (named above): two cells of one driver never read alike
    runtime = "".join(f", {name} {value}" for name, value in sorted(cell.params.items()) if name != "recipe")
    return {"fraction": fraction, "read": read, "image": image, "whole": whole, "runtime": runtime}


# ---- the figures that need more than a template


def _copy_up_figure(v: Values) -> str:
    return (
        f"{v['driver']}: first append {human(v['big'], 'ns')} at {human(v['big_size'], 'bytes')} vs "
        f"{human(v['small'], 'ns')} at {human(v['small_size'], 'bytes')} ({v['ratio']:.0f}x), "
        f"container layer +{human(v['grew'], 'bytes')}"
    )


def _commit_figure(v: Values) -> str:
    return (
        f"{v['driver']}: new layer {human(v['layer'], 'bytes')}{' alone' if v['alone'] is not None else ''} for "
        f"{human(v['written'], 'bytes')} of changes on a {human(v['image'], 'bytes')} image"
    )


def _nearest_figure(v: Values) -> str:
    if v["error"] is not None:
        return f"{v['driver']}: {v['error']}"
    return f"{v['driver']}: {v['checked']} reads, each the uppermost layer's copy"


_UNION_OR_SNAPSHOT = ("union", "snapshot")
_TUTORIAL = "the seed tutorial (Docker's storage-driver documentation)"
_USERS = "what users ask (Docker's storage-driver and volume documentation)"
_SLACKER = "Slacker: Fast Distribution with Lazy Docker Containers (Harter et al., FAST '16)"


def _both(rule: Rule, *styles: str) -> dict[str, Rule]:
    return dict.fromkeys(styles, rule)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "sharing",
        "Containers from one image share its layers: union and snapshot drivers cost the image once "
        "plus a little per container; vfs about one image per container",
        _TUTORIAL,
        "layer-sharing",
        ("disk_bytes", "image_disk_bytes"),
        Each(
            Select(),
            _sharing,
            "{driver}: {n} containers add {grew:bytes}, {each:.3f} image each",
            {
                **_both(lambda v: v["each"] < 0.05, *_UNION_OR_SNAPSHOT),
                "copy": lambda v: v["each"] > 0.8,
                "*": lambda v: True,  # other styles are shown and hold: the claim is about these three
            },
            none="no layer-sharing cells",
            empty="no disk_bytes in layer-sharing",
            per_driver=_most("containers"),
        ),
    ),
    Claim(
        "copy-up",
        "A change copies the file up into the container's layer; the copy costs time that grows with "
        "the file's size on overlay2 and not on btrfs",
        _TUTORIAL,
        "copy-up",
        ("copy_up_ns", "disk_bytes", "image_disk_bytes"),
        Each(
            Select(params=(("mode", "append"), ("depth", 1))),
            _copy_up,
            _copy_up_figure,
            {
                "union": lambda v: v["ratio"] > 10 and v["grew"] >= 0.9 * v["big_size"],
                "snapshot": lambda v: v["ratio"] < 10,
            },
            empty="no copy-up cells on a union or snapshot driver",
            per_driver=lambda cells: cells,
        ),
    ),
    Claim(
        "delete",
        "Deleting a file in a later layer does not make the image smaller",
        _TUTORIAL,
        "delete-in-later-layer",
        ("image_layers_disk_bytes",),
        Each(
            Select(),
            _delete,
            "{driver}: {peak:bytes} before the delete, {final:bytes} after; file hidden in {hidden} samples",
            {"*": lambda v: v["final"] >= 0.98 * v["peak"] and v["hidden"] > 0},
            none="no delete-in-later-layer cells",
        ),
    ),
    Claim(
        "commit",
        "A commit adds one layer holding only the container's changes",
        _TUTORIAL,
        "commit",
        ("layer_alone_disk_bytes", "image_disk_bytes", "written_bytes", "commit_layer_bytes"),
        Each(
            Select(),
            _commit,
            _commit_figure,
            _both(
                lambda v: v["layer"] <= 1.5 * v["written"] and (v["alone"] is None or v["alone"] >= 0.5 * v["written"]),
                *_UNION_OR_SNAPSHOT,
            ),
            empty="no commit cells on a union or snapshot driver",
        ),
    ),
    Claim(
        "vfs-worst",
        "vfs is the slowest to start and the largest on disk",
        _USERS,
        "layer-sharing",
        ("startup_ns", "disk_bytes"),
        Extremes(
            "containers",
            (("slowest", "startup_ns", "ns"), ("largest", "disk_bytes", "bytes")),
            "copy",
            _UNION_OR_SNAPSHOT,
            "needs layer-sharing on vfs and on a union or snapshot driver",
        ),
    ),
    Claim(
        "volumes",
        "Writes to a volume or a tmpfs avoid copy-up",
        _USERS,
        "write-heavy",
        ("overwrite_container_ns", "overwrite_volume_ns", "overwrite_tmpfs_ns"),
        Each(
            Select(styles=("union",)),
            _medians(box="overwrite_container_ns", vol="overwrite_volume_ns", tmp="overwrite_tmpfs_ns"),
            "{driver}: overwrite in the container layer {box:ns}, on a volume {vol:ns}, on tmpfs {tmp:ns}",
            {"*": lambda v: v["box"] > 10 * v["vol"] and v["box"] > 10 * v["tmp"]},
            none="needs write-heavy on a union driver (overlay2)",
            order=lambda c: (),  # as the run has them
            empty="needs write-heavy on a union driver (overlay2) with its three overwrite metrics",
        ),
    ),
    Claim(
        "page-cache",
        "Containers from one image share one copy of it in memory: on union drivers each further container "
        "adds under 5% of an image to the page cache; on snapshot (btrfs, reflink, zfs) and copy drivers "
        "about one image each",
        _USERS,
        "page-cache-sharing",
        ("page_cache_first_bytes", "page_cache_per_container_bytes"),
        Each(
            Select(needs=("page_cache_per_container_bytes",)),
            _page_cache,
            lambda v: (
                f"{v['driver']}: first container {human(v['first'], 'bytes')}, each further one "
                f"{human(v['each'], 'bytes')} ({v['each'] / v['image']:.2f} image) at {v['n']} containers"
            ),
            {
                "union": lambda v: v["each"] < 0.05 * v["image"],
                **_both(lambda v: 0.8 * v["image"] <= v["each"] <= 1.25 * v["image"], "snapshot", "copy"),
            },
            empty="no page-cache-sharing cells with two or more containers",
            per_driver=_most("containers"),
        ),
    ),
    Claim(
        "images",
        "Images built on one base store it once: union and snapshot drivers add about each image's new layers; "
        "vfs copies the base into every image",
        _USERS,
        "image-sharing",
        ("images",),
        Each(
            Select(where=lambda c: bool(c.get("images"))),
            _images,
            "{driver}: {added} (own layers {own:bytes}, base {base:bytes})",
            {
                **_both(
                    lambda v: all(i["added_bytes"] - i["bytes"] < 0.25 * i["base_bytes"] for i in v["built"]),
                    *_UNION_OR_SNAPSHOT,
                ),
                "copy": lambda v: all(i["added_bytes"] >= 0.8 * i["base_bytes"] for i in v["built"]),
            },
            empty="no image-sharing cells",
            per_driver=lambda cells: max(cells, key=lambda c: c.get("image_bytes", 0)),
        ),
    ),
    Claim(
        "remove",
        "Removing a container removes its layer: the store returns to the image's size",
        _USERS,
        "container-remove",
        ("image_disk_bytes", "with_container_disk_bytes", "after_remove_disk_bytes"),
        Each(
            Select(),
            _medians(image="image_disk_bytes", during="with_container_disk_bytes", after="after_remove_disk_bytes"),
            "{driver}: {during:bytes} with the container, {after:bytes} after remove, image alone {image:bytes}",
            {"*": lambda v: abs(v["after"] - v["image"]) <= max(0.01 * v["image"], _SLACK)},
            empty="no container-remove cells",
        ),
    ),
    Claim(
        "tmpfs",
        "tmpfs writes never reach the host file system: they leave the store's used bytes unchanged, while the "
        "same on a bind volume adds them",
        _USERS,
        "volume-writes",
        ("before_write_disk_bytes", "after_write_disk_bytes", "written_bytes"),
        Each(
            Select(),
            _tmpfs,
            "{driver}: {written_tmpfs:bytes} written to tmpfs added {tmpfs:bytes}, to a bind volume {bind:bytes}",
            {"*": lambda v: abs(v["tmpfs"]) <= _SLACK and v["bind"] >= 0.95 * v["written"] > 0},
            empty="needs volume-writes with kind tmpfs and bind on one driver",
            per_driver=lambda cells: cells,
        ),
    ),
    Claim(
        "nearest",
        "The nearest layer wins in the merged view: a file in several layers reads as the uppermost copy",
        "the OCI image spec (layers applied in order) and overlayfs (the upper layer hides the lower)",
        "nearest-layer",
        ("expect_files",),
        Each(
            Select(statuses=("ok", "error")),
            _nearest,
            _nearest_figure,
            {"*": lambda v: v["error"] is None},
            empty="no nearest-layer cells",
        ),
    ),
    Claim(
        "rootless",
        "fuse-overlayfs is for hosts where rootless kernel overlay cannot run: where it can, overlay2-rootless "
        "starts containers and copies up faster",
        "rootless Podman's storage documentation (fuse-overlayfs before kernel 5.11's unprivileged overlay)",
        "",
        ("startup_ns", "copy_up_ns"),
        Faster(
            "overlay2-rootless",
            "fuse-overlayfs",
            (("startup", "startup_ns", (), None), ("copy-up", "copy_up_ns", (("mode", "append"),), "depth")),
            "needs startup and copy-up cells on both overlay2-rootless and fuse-overlayfs",
        ),
    ),
    Claim(
        "pull-dominates",
        "Pulling dominates a cold start: the download and the unpack are most of the time to ready (Slacker: 76%)",
        _SLACKER,
        "",
        ("pull_ns", "unpack_ns", "cold_start_ns"),
        Each(
            Select(needs=("pull_ns", "unpack_ns", "cold_start_ns")),
            _pull_share,
            "{driver} at {link}: {share:.0%} of a {whole:ns} cold start (download {download:.0%})",
            {"*": lambda v: v["share"] >= 0.5},
            none="no cell with pull_ns and cold_start_ns (a pull step, then a run step)",
            empty="no cold start with a duration",
            order=lambda c: (c.driver, _link(c), c.scenario),
        ),
    ),
    Claim(
        "base-present",
        "An image whose base is already present downloads only its own layers",
        "the OCI distribution spec (layers fetched by digest, skipped when present)",
        "",
        ("second_pulled_bytes", "second_image_pull_bytes", "second_pulled_layer0_bytes"),
        Each(
            Select(needs=("second_pulled_bytes",)),
            _base_present,
            lambda v: (
                f"{v['driver']} at {v['link']}: the second image fetched {human(v['got'], 'bytes')} "
                f"of its {human(v['whole'], 'bytes')} ({v['got'] / v['whole']:.1%}); "
                f"its base layer {human(v['base'], 'bytes')}"
            ),
            {"*": lambda v: v["base"] == 0 and v["got"] < v["whole"]},
            none="no second pull of an image on a present base (pull-shared-base)",
            empty="no second pull with its image's size",
            order=lambda c: (c.driver, _link(c)),
        ),
    ),
    Claim(
        "reads-little",
        f"A container reads a small part of its image to start: under {SMALL_READ:.0%} of its bytes (Slacker: 6.4%)",
        _SLACKER,
        "",
        ("read_fraction", "read_bytes"),
        Each(
            Select(needs=("read_fraction",)),
            _reads_little,
            "{driver}{image}{runtime}: {fraction:.1%} ({read:bytes}{whole})",
            {"*": lambda v: v["fraction"] < SMALL_READ},
            none="no cell with read_fraction (a run step with cold = true, e.g. cold-start)",
            empty="no cold start with what it read",
            order=lambda c: (c.driver, str(c.params.get("recipe", "")), _link(c)),
            unique=True,
        ),
    ),
)


def claim(claim_id: str) -> Claim:
    """The claim with this id (KeyError naming the known ids when there is none)."""
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}; the claims: {', '.join(c.id for c in CLAIMS)}")


def where(row: Mapping[str, str]) -> str:
    """` (on xfs, host-a)`: the backing and host a claim's row was decided on, if any."""
    on = ", ".join(x for x in (row.get("backing"), row.get("host")) if x)
    return f" (on {on})" if on else ""


def evaluate(doc: RunDocument | Mapping[str, Any], claims: Sequence[Claim] = CLAIMS) -> list[dict[str, str]]:
    """Every claim with its verdict and the figures that decide it, per host of a fleet and per backing
    in a backing sweep; a claim that comes out the same everywhere is said once."""
    out = []
    run = run_document(doc)
    parts = [(h, b, part) for h, whole in run.by_host() for b, part in whole.by_backing()]
    for c in claims:
        found = [(host, backing, *c(part)) for host, backing, part in parts]
        if len({(v, f) for _, _, v, f in found}) == 1:  # the same everywhere (e.g. not measured): said once
            found = [("", "", *found[0][2:])]
        out += [
            {"id": c.id, "claim": c.statement, "host": h, "backing": b, "verdict": v, "figures": f}
            for h, b, v, f in found
        ]
    return out


def claims_text(doc: RunDocument | Mapping[str, Any]) -> str:
    """The claims as lines a person reads after a run."""
    lines = ["== claims"]
    for row in evaluate(doc):
        lines.append(f"[{row['verdict']}]{where(row)} {row['claim']}")
        if row["figures"]:
            lines.append(f"    {row['figures']}")
    return "\n".join(lines) + "\n"
