"""The claims people make about image layers, checked against a run's own numbers.

Each claim is decided from the cells of the built-in scenario that measures it:
held, did not hold, or not measured, with the figures that decide it. The seed
tutorial's claims (layers shared between containers, copy-on-write into the
container layer, deletes that do not shrink an image, commit as a new layer) and
the ones users ask about (vfs's cost, volumes bypassing the driver, memory).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from typing import Any

from layerbench.analysis.results_model import RunDocument, median, run_document
from layerbench.units import human

__all__ = [
    "evaluate",
    "claim_id",
    "by_backing",
    "by_host",
    "where",
    "claims_text",
    "CLAIMS",
    "HELD",
    "NOT_HELD",
    "NOT_MEASURED",
]

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
Verdict = tuple[str, str]


def _median(cell: dict[str, Any], metric: str) -> float | None:
    return median(cell.get("metrics", {}).get(metric, {}).get("samples", []))


def _cells(doc: dict[str, Any], scenario: str, **params: Any) -> list[dict[str, Any]]:
    return [
        c
        for c in doc["cells"]
        if c["scenario"] == scenario and c["status"] == "ok" and all(c["params"].get(k) == v for k, v in params.items())
    ]


def _style(doc: dict[str, Any], driver: str) -> str:
    return doc.get("drivers", {}).get(driver, {}).get("style", "")


def _sharing(doc: dict[str, Any]) -> Verdict:
    cells = _cells(doc, "layer-sharing")
    if not cells:
        return NOT_MEASURED, "no layer-sharing cells"
    figures, ok = [], True
    for driver in sorted({c["driver"] for c in cells}):
        cell = max((c for c in cells if c["driver"] == driver), key=lambda c: c["params"].get("containers", 0))
        n, disk, image = (
            cell["params"].get("containers", 1),
            _median(cell, "disk_bytes"),
            _median(cell, "image_disk_bytes"),
        )
        if disk is None or image is None or not cell.get("image_bytes"):
            continue
        each = (disk - image) / n / cell["image_bytes"]
        figures.append(f"{driver}: {n} containers add {human(disk - image, 'bytes')}, {each:.3f} image each")
        style = _style(doc, driver)
        if style in ("union", "snapshot"):
            ok &= each < 0.05
        elif style == "copy":
            ok &= each > 0.8
    if not figures:
        return NOT_MEASURED, "no disk_bytes in layer-sharing"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _copy_up(doc: dict[str, Any]) -> Verdict:
    cells = _cells(doc, "copy-up", mode="append", depth=1)
    figures, decided, ok = [], False, True
    for driver in sorted({c["driver"] for c in cells}):
        mine = {c["params"]["file_size"]: c for c in cells if c["driver"] == driver}
        if len(mine) < 2:
            continue
        small, big = mine[min(mine)], mine[max(mine)]
        a, b = _median(small, "copy_up_ns"), _median(big, "copy_up_ns")
        if not a or b is None:
            continue
        ratio = b / a
        grew = (_median(big, "disk_bytes") or 0) - (_median(big, "image_disk_bytes") or 0)
        figures.append(
            f"{driver}: first append {human(b, 'ns')} at {human(max(mine), 'bytes')} vs "
            f"{human(a, 'ns')} at {human(min(mine), 'bytes')} ({ratio:.0f}x), container layer +{human(grew, 'bytes')}"
        )
        style = _style(doc, driver)
        if style == "union":
            decided, ok = True, ok and ratio > 10 and grew >= 0.9 * max(mine)
        elif style == "snapshot":
            decided, ok = True, ok and ratio < 10
    if not decided:
        return NOT_MEASURED, "; ".join(figures) or "no copy-up cells on a union or snapshot driver"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _delete(doc: dict[str, Any]) -> Verdict:
    cells = _cells(doc, "delete-in-later-layer")
    if not cells:
        return NOT_MEASURED, "no delete-in-later-layer cells"
    figures, ok = [], True
    for c in sorted(cells, key=lambda c: c["driver"]):
        layers = c.get("image_layers_disk_bytes") or []
        if len(layers) < 2:
            continue
        peak, final = max(layers[:-1]), layers[-1]
        hidden = sum(
            n for label, o in c.get("outcomes", {}).items() if "stat" in label for e, n in o.items() if e == "ENOENT"
        )
        figures.append(
            f"{c['driver']}: {human(peak, 'bytes')} before the delete, {human(final, 'bytes')} after; "
            f"file hidden in {hidden} samples"
        )
        ok &= final >= 0.98 * peak and hidden > 0
    return (HELD if ok and figures else NOT_HELD if figures else NOT_MEASURED), "; ".join(figures)


def _commit(doc: dict[str, Any]) -> Verdict:
    cells = _cells(doc, "commit")
    figures, decided, ok = [], False, True
    for c in sorted(cells, key=lambda c: c["driver"]):
        # what the layer holds alone, once the container is removed (a btrfs snapshot shares every extent with
        # the live container, so what the commit added beside it is next to nothing and decides nothing)
        # (the usage step reads the store over the empty store's: the image is in it, taken off here)
        store, image = _median(c, "layer_alone_disk_bytes"), _median(c, "image_disk_bytes")
        alone = None if store is None or image is None else store - image
        written = _median(c, "written_bytes")
        layer = alone if alone is not None else _median(c, "commit_layer_bytes")
        if layer is None or not written:
            continue
        figures.append(
            f"{c['driver']}: new layer {human(layer, 'bytes')}{' alone' if alone is not None else ''} for "
            f"{human(written, 'bytes')} of changes on a {human(c.get('image_bytes', 0), 'bytes')} image"
        )
        if _style(doc, c["driver"]) in ("union", "snapshot"):
            holds = layer <= 1.5 * written and (alone is None or alone >= 0.5 * written)
            decided, ok = True, ok and holds
    if not decided:
        return NOT_MEASURED, "; ".join(figures) or "no commit cells on a union or snapshot driver"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _vfs_worst(doc: dict[str, Any]) -> Verdict:
    cells = _cells(doc, "layer-sharing")
    copy = [d for d in {c["driver"] for c in cells} if _style(doc, d) == "copy"]
    others = [d for d in {c["driver"] for c in cells} if _style(doc, d) in ("union", "snapshot")]
    if not copy or not others:
        return NOT_MEASURED, "needs layer-sharing on vfs and on a union or snapshot driver"
    ok, figures = True, []
    for n in sorted({c["params"].get("containers") for c in cells}):
        at = {c["driver"]: c for c in cells if c["params"].get("containers") == n}
        start = {d: _median(c, "startup_ns") or 0 for d, c in at.items()}
        disk = {d: _median(c, "disk_bytes") or 0 for d, c in at.items()}
        slowest, largest = max(start, key=start.__getitem__), max(disk, key=disk.__getitem__)
        ok &= slowest in copy and largest in copy
        figures.append(
            f"{n} containers: slowest {slowest} ({human(start[slowest], 'ns')}), "
            f"largest {largest} ({human(disk[largest], 'bytes')})"
        )
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _volumes(doc: dict[str, Any]) -> Verdict:
    cells = [c for c in _cells(doc, "write-heavy") if _style(doc, c["driver"]) == "union"]
    if not cells:
        return NOT_MEASURED, "needs write-heavy on a union driver (overlay2)"
    ok, figures = True, []
    for c in cells:
        box, vol, tmp = (_median(c, f"overwrite_{t}_ns") for t in ("container", "volume", "tmpfs"))
        if box is None or vol is None or tmp is None:
            return NOT_MEASURED, f"{c['driver']}: overwrite metrics missing"
        figures.append(
            f"{c['driver']}: overwrite in the container layer {human(box, 'ns')}, on a volume "
            f"{human(vol, 'ns')}, on tmpfs {human(tmp, 'ns')}"
        )
        ok &= box > 10 * vol and box > 10 * tmp
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _page_cache(doc: dict[str, Any]) -> Verdict:
    """Each driver's page cache per further container, in images, at its most containers."""
    cells = [c for c in _cells(doc, "page-cache-sharing") if _median(c, "page_cache_per_container_bytes") is not None]
    figures, decided, ok = [], False, True
    for driver in sorted({c["driver"] for c in cells}):
        cell = max((c for c in cells if c["driver"] == driver), key=lambda c: c["params"].get("containers", 0))
        image, first = cell.get("image_bytes"), _median(cell, "page_cache_first_bytes")
        each = _median(cell, "page_cache_per_container_bytes")
        if not image or first is None or each is None:
            continue
        figures.append(
            f"{driver}: first container {human(first, 'bytes')}, each further one {human(each, 'bytes')} "
            f"({each / image:.2f} image) at {cell['params'].get('containers')} containers"
        )
        style = _style(doc, driver)
        if style == "union":
            decided, ok = True, ok and each < 0.05 * image
        elif style in ("snapshot", "copy"):
            decided, ok = True, ok and 0.8 * image <= each <= 1.25 * image
    if not decided:
        return NOT_MEASURED, "; ".join(figures) or "no page-cache-sharing cells with two or more containers"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


_SLACK = 256 << 10  # a store's metadata moves by a few blocks: 256 KiB, or 1%, counts as unchanged


def _images(doc: dict[str, Any]) -> Verdict:
    """What each further image of image-sharing added to the store, against its own bytes and its base's."""
    cells = [c for c in _cells(doc, "image-sharing") if c.get("images")]
    figures, decided, ok = [], False, True
    for driver in sorted({c["driver"] for c in cells}):
        cell = max((c for c in cells if c["driver"] == driver), key=lambda c: c.get("image_bytes", 0))
        built = [i for i in cell["images"] if i.get("base_bytes")]
        if not built:
            continue
        added = ", ".join(f"{i['name']} +{human(i['added_bytes'], 'bytes')}" for i in built)
        figures.append(
            f"{driver}: {added} (own layers {human(built[0]['bytes'], 'bytes')}, "
            f"base {human(built[0]['base_bytes'], 'bytes')})"
        )
        style = _style(doc, driver)
        if style in ("union", "snapshot"):
            decided, ok = True, ok and all(i["added_bytes"] - i["bytes"] < 0.25 * i["base_bytes"] for i in built)
        elif style == "copy":
            decided, ok = True, ok and all(i["added_bytes"] >= 0.8 * i["base_bytes"] for i in built)
    if not decided:
        return NOT_MEASURED, "; ".join(figures) or "no image-sharing cells"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _remove(doc: dict[str, Any]) -> Verdict:
    """container-remove: the store's use after `remove` against the image alone."""
    figures, ok = [], True
    for c in sorted(_cells(doc, "container-remove"), key=lambda c: c["driver"]):
        image, during, after = (
            _median(c, m) for m in ("image_disk_bytes", "with_container_disk_bytes", "after_remove_disk_bytes")
        )
        if image is None or during is None or after is None:
            continue
        figures.append(
            f"{c['driver']}: {human(during, 'bytes')} with the container, {human(after, 'bytes')} "
            f"after remove, image alone {human(image, 'bytes')}"
        )
        ok &= abs(after - image) <= max(0.01 * image, _SLACK)
    if not figures:
        return NOT_MEASURED, "no container-remove cells"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _tmpfs(doc: dict[str, Any]) -> Verdict:
    """volume-writes: what the write added to the store's use, on a tmpfs and on a bind volume."""
    figures, ok = [], True
    cells = _cells(doc, "volume-writes")
    for driver in sorted({c["driver"] for c in cells}):
        grew, written = {}, {}
        for c in (c for c in cells if c["driver"] == driver):
            before, after = _median(c, "before_write_disk_bytes"), _median(c, "after_write_disk_bytes")
            if before is not None and after is not None:
                grew[c["params"].get("kind")], written[c["params"].get("kind")] = (
                    after - before,
                    _median(c, "written_bytes") or 0,
                )
        if "tmpfs" not in grew or "bind" not in grew:
            continue
        figures.append(
            f"{driver}: {human(written['tmpfs'], 'bytes')} written to tmpfs added "
            f"{human(grew['tmpfs'], 'bytes')}, to a bind volume {human(grew['bind'], 'bytes')}"
        )
        ok &= abs(grew["tmpfs"]) <= _SLACK and grew["bind"] >= 0.95 * written["bind"] > 0
    if not figures:
        return NOT_MEASURED, "needs volume-writes with kind tmpfs and bind on one driver"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _nearest(doc: dict[str, Any]) -> Verdict:
    """nearest-layer: each driver's cell read every checked file as its uppermost copy, or failed naming it."""
    cells = [c for c in doc["cells"] if c["scenario"] == "nearest-layer" and c["status"] in ("ok", "error")]
    figures, ok = [], True
    for c in sorted(cells, key=lambda c: c["driver"]):
        if c["status"] == "error":
            figures.append(f"{c['driver']}: {c['error']}")
            ok = False
            continue
        checked = len(c.get("metrics", {}).get("expect_files", {}).get("samples", []))
        if checked:
            figures.append(f"{c['driver']}: {checked} reads, each the uppermost layer's copy")
    if not figures:
        return NOT_MEASURED, "no nearest-layer cells"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _rootless(doc: dict[str, Any]) -> Verdict:
    """overlay2-rootless against fuse-overlayfs: startup at each set both ran, and the first append to
    each file size both ran on the shallowest image; faster everywhere, or it did not hold."""
    kernel, fuse = "overlay2-rootless", "fuse-overlayfs"
    pairs = []  # (what, kernel's median, fuse's median)
    for scenario, metric, params in (("startup", "startup_ns", {}), ("copy-up", "copy_up_ns", {"mode": "append"})):
        at: dict[tuple[tuple[str, Any], ...], dict[str, float]] = {}
        for c in _cells(doc, scenario, **params):
            if c["driver"] in (kernel, fuse) and (m := _median(c, metric)) is not None:
                at.setdefault(tuple(sorted(c["params"].items())), {})[c["driver"]] = m
        common = sorted((k, v) for k, v in at.items() if len(v) == 2)
        if scenario == "copy-up" and common:  # every file size, on the shallowest image
            top = min(dict(k).get("depth", 1) for k, _ in common)
            common = [(k, v) for k, v in common if dict(k).get("depth", 1) == top]
        pairs += [(f"{scenario} ({', '.join(f'{k}={v}' for k, v in key)})", v[kernel], v[fuse]) for key, v in common]
    if not any(w.startswith("startup") for w, _, _ in pairs) or not any(w.startswith("copy-up") for w, _, _ in pairs):
        return NOT_MEASURED, "needs startup and copy-up cells on both overlay2-rootless and fuse-overlayfs"
    figures = [f"{what}: {kernel} {human(a, 'ns')}, {fuse} {human(b, 'ns')}" for what, a, b in pairs]
    return (HELD if all(a < b for _, a, b in pairs) else NOT_HELD), "; ".join(figures)


def _samples(cell: dict[str, Any], metric: str) -> list[float]:
    return [float(x) for x in cell.get("metrics", {}).get(metric, {}).get("samples", [])]


def _link(cell: dict[str, Any]) -> str:
    return str(cell["params"].get("link", "loopback"))


def _pull_dominates(doc: dict[str, Any]) -> Verdict:
    """Per driver and link: the pull's share (download + the unpack not hidden behind it) of each cold start,
    sample by sample, from any cell that pulled and started to ready (`cold_start_ns`)."""
    cells = [
        c
        for c in doc["cells"]
        if c["status"] == "ok" and all(_samples(c, m) for m in ("pull_ns", "unpack_ns", "cold_start_ns"))
    ]
    if not cells:
        return NOT_MEASURED, "no cell with pull_ns and cold_start_ns (a pull step, then a run step)"
    figures, ok = [], True
    for c in sorted(cells, key=lambda c: (c["driver"], _link(c), c["scenario"])):
        pulls, unpacks, whole = (_samples(c, m) for m in ("pull_ns", "unpack_ns", "cold_start_ns"))
        n = min(len(pulls), len(unpacks), len(whole))
        shares = [(pulls[i] + unpacks[i]) / whole[i] for i in range(n) if whole[i] > 0]
        if not shares:
            continue
        share = statistics.median(shares)
        download = statistics.median(pulls[i] / whole[i] for i in range(n) if whole[i] > 0)
        figures.append(
            f"{c['driver']} at {_link(c)}: {share:.0%} of a {human(statistics.median(whole), 'ns')} cold start "
            f"(download {download:.0%})"
        )
        ok &= share >= 0.5
    if not figures:
        return NOT_MEASURED, "no cold start with a duration"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


def _base_present(doc: dict[str, Any]) -> Verdict:
    """An image pulled after one with the same base (`pull-shared-base`): its base layer is not fetched again."""
    cells = [c for c in doc["cells"] if c["status"] == "ok" and _samples(c, "second_pulled_bytes")]
    if not cells:
        return NOT_MEASURED, "no second pull of an image on a present base (pull-shared-base)"
    figures, ok = [], True
    for c in sorted(cells, key=lambda c: (c["driver"], _link(c))):
        got, whole = _median(c, "second_pulled_bytes"), _median(c, "second_image_pull_bytes")
        base = _median(c, "second_pulled_layer0_bytes")
        if got is None or not whole or base is None:
            continue
        figures.append(
            f"{c['driver']} at {_link(c)}: the second image fetched {human(got, 'bytes')} "
            f"of its {human(whole, 'bytes')} "
            f"({got / whole:.1%}); its base layer {human(base, 'bytes')}"
        )
        ok &= base == 0 and got < whole
    if not figures:
        return NOT_MEASURED, "no second pull with its image's size"
    return (HELD if ok else NOT_HELD), "; ".join(figures)


#: "a small part": a start that reads under this fraction of its image (Slacker, FAST '16: 6.4% on average)
SMALL_READ = 0.2


def _reads_little(doc: dict[str, Any]) -> Verdict:
    """Per driver (and image): the median fraction of the image's bytes a cold start read from the store
    (`read_fraction` of a `run` step with `cold = true`), held where it is under SMALL_READ."""
    cells = [c for c in doc["cells"] if c["status"] == "ok" and _samples(c, "read_fraction")]
    if not cells:
        return NOT_MEASURED, "no cell with read_fraction (a run step with cold = true, e.g. cold-start)"
    figures, ok = [], True
    for c in sorted(cells, key=lambda c: (c["driver"], str(c["params"].get("recipe", "")), _link(c))):
        fraction, read = _median(c, "read_fraction"), _median(c, "read_bytes")
        if fraction is None or read is None:
            continue
        image = f" {c['params']['recipe']}" if "recipe" in c["params"] else ""
        whole = f" of {human(read / fraction, 'bytes')}" if fraction > 0 else ""
        runtime = f", {c['params']['runtime']}" if "runtime" in c["params"] else ""
        figures.append(f"{c['driver']}{image}{runtime}: {fraction:.1%} ({human(read, 'bytes')}{whole})")
        ok &= fraction < SMALL_READ
    if not figures:
        return NOT_MEASURED, "no cold start with what it read"
    return (HELD if ok else NOT_HELD), "; ".join(dict.fromkeys(figures))


CLAIMS: list[tuple[str, Callable[[dict[str, Any]], Verdict]]] = [
    (
        (
            "Containers from one image share its layers: union and snapshot drivers cost the image once "
            "plus a little per container; vfs about one image per container"
        ),
        _sharing,
    ),
    (
        (
            "A change copies the file up into the container's layer; the copy costs time that grows with "
            "the file's size on overlay2 and not on btrfs"
        ),
        _copy_up,
    ),
    ("Deleting a file in a later layer does not make the image smaller", _delete),
    ("A commit adds one layer holding only the container's changes", _commit),
    ("vfs is the slowest to start and the largest on disk", _vfs_worst),
    ("Writes to a volume or a tmpfs avoid copy-up", _volumes),
    (
        (
            "Containers from one image share one copy of it in memory: on union drivers each further container "
            "adds under 5% of an image to the page cache; on snapshot (btrfs, reflink, zfs) and copy drivers "
            "about one image each"
        ),
        _page_cache,
    ),
    (
        (
            "Images built on one base store it once: union and snapshot drivers add about each image's new layers; "
            "vfs copies the base into every image"
        ),
        _images,
    ),
    ("Removing a container removes its layer: the store returns to the image's size", _remove),
    (
        (
            "tmpfs writes never reach the host file system: they leave the store's used bytes unchanged, while the "
            "same on a bind volume adds them"
        ),
        _tmpfs,
    ),
    ("The nearest layer wins in the merged view: a file in several layers reads as the uppermost copy", _nearest),
    (
        (
            "fuse-overlayfs is for hosts where rootless kernel overlay cannot run: where it can, overlay2-rootless "
            "starts containers and copies up faster"
        ),
        _rootless,
    ),
    (
        "Pulling dominates a cold start: the download and the unpack are most of the time to ready (Slacker: 76%)",
        _pull_dominates,
    ),
    ("An image whose base is already present downloads only its own layers", _base_present),
    (
        f"A container reads a small part of its image to start: under {SMALL_READ:.0%} of its bytes (Slacker: 6.4%)",
        _reads_little,
    ),
]


def claim_id(check: Callable[[dict[str, Any]], Verdict]) -> str:
    """A claim's stable id, its check's name (`_copy_up` -> `copy-up`): tests and tools pick claims by it."""
    return check.__name__.strip("_").replace("_", "-")


def by_backing(doc: RunDocument | Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The document once per backing filesystem of a backing sweep, else once whole (RunDocument.by_backing)."""
    return [(b, part.to_dict()) for b, part in run_document(doc).by_backing()]


def by_host(doc: RunDocument | Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The document once per host of a fleet run with several hosts, else once whole (RunDocument.by_host)."""
    return [(h, part.to_dict()) for h, part in run_document(doc).by_host()]


def where(row: dict[str, str]) -> str:
    """` (on xfs, host-a)`: the backing and host a claim's row was decided on, if any."""
    on = ", ".join(x for x in (row.get("backing"), row.get("host")) if x)
    return f" (on {on})" if on else ""


def evaluate(doc: RunDocument | Mapping[str, Any]) -> list[dict[str, str]]:
    """Every claim with its verdict and the figures that decide it, per host of a fleet and per backing
    in a backing sweep; a claim that comes out the same everywhere is said once."""
    out = []
    run = run_document(doc)
    parts = [(h, b, part.to_dict()) for h, whole in run.by_host() for b, part in whole.by_backing()]
    for claim, check in CLAIMS:
        found = [(host, backing, *check(part)) for host, backing, part in parts]
        if len({(v, f) for _, _, v, f in found}) == 1:  # the same everywhere (e.g. not measured): said once
            found = [("", "", *found[0][2:])]
        cid = claim_id(check)
        out += [
            {"id": cid, "claim": claim, "host": h, "backing": b, "verdict": v, "figures": f} for h, b, v, f in found
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
