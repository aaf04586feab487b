"""Pulling an image from a registry into a driver's store, the way an engine does.

The manifest (an index resolved to this platform), then the layer blobs fetched
concurrently (3 at a time, Docker's and containerd's default), each streamed to a spool
file and verified against its digest and size; each layer is applied through the driver
(`create_layer`, the tar decompressed and applied with OCI semantics, its uncompressed bytes
hashed in the same pass and checked against the config's diff_id as containerd's unpacker
does, `seal_layer`) as soon
as it and every layer below it have arrived, in layer order, as Docker's "Download
complete" -> "Extracting" -> "Pull complete". A layer the store already holds on the same
chain of layers below is not fetched ("Already exists").

`pull_ns` runs from the manifest request to the last byte of the last blob fetched;
`unpack_ns` from then to the last layer sealed (the unpacking not hidden behind the
download), so the two add up to the whole pull as a user waits. `apply_ns` is every
layer's decompress + apply + seal, summed. Bytes transferred are recorded per layer.
"""

from __future__ import annotations

import copy
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns

from layerbench.driver import Driver, LayerFormat
from layerbench.images.config import ImageConfig, parse_config
from layerbench.images.layer_apply import SKIPPED_LISTED
from layerbench.images.layer_stream import SizeLimit
from layerbench.images.layer_tar import LowerTree
from layerbench.images.oci import LayerBlob, apply_blob, config_diff_ids
from layerbench.images.registry_client import Descriptor, Reference, RegistryClient

__all__ = ["Pulled", "PulledLayer", "StoreLayers", "pull_image", "parse_json", "CONCURRENCY"]

#: blobs fetched at once (Docker's max-concurrent-downloads, containerd's default)
CONCURRENCY = 3


@dataclass
class PulledLayer:
    """One layer of a pull: its blob, where it went in the store, what crossed the network for it."""

    digest: str
    size: int  # the blob's size (compressed)
    layer_id: str
    transferred: int  # bytes fetched: 0 when the layer already existed
    existed: bool


@dataclass
class Pulled:
    """What `pull_image` did: the image's top layer in the store, its config, the timings and bytes."""

    top: str
    config: ImageConfig
    layers: list[PulledLayer]
    pull_ns: int
    unpack_ns: int | None  # None: an engine's pull (run/engine.py), its unpacking inside pull_ns
    apply_ns: int | None
    skipped: list[str] = field(default_factory=list)  # what the layers it applied did not apply and why

    @property
    def transferred(self) -> int:
        return sum(layer.transferred for layer in self.layers)

    @property
    def image_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass
class StoreLayers:
    """The layers a store holds by chain (the digests of a layer and every layer below it), as an engine's
    content store knows them: the layer's id and, for a DIFF driver, the lower tree after it."""

    by_chain: dict[tuple[str, ...], tuple[str, LowerTree | None]] = field(default_factory=dict)

    def forget(self, layer_ids: set[str]) -> None:
        """Drop the layers removed from the store."""
        self.by_chain = {k: v for k, v in self.by_chain.items() if v[0] not in layer_ids}


def pull_image(
    client: RegistryClient,
    ref: Reference,
    driver: Driver,
    store: StoreLayers,
    spool: Path,
    *,
    id_prefix: str = "pull",
    created: list[str] | None = None,
    limit: int | None = None,
    concurrency: int = CONCURRENCY,
) -> Pulled:
    """Pull `ref` into `driver`'s store; new layers are named `<id_prefix>-<i>` and appended to `created`
    as soon as they exist (so the caller releases them after a failure too). `spool` (a directory
    made here, removed after) holds the blobs between their download and their unpacking; `limit`
    bounds each blob's size (default: the free disk under `spool`). Raises `UserError` in one line."""
    spool.mkdir(mode=0o700, exist_ok=True)
    made = created if created is not None else []
    try:
        return _pull(client, ref, driver, store, spool, id_prefix, made, limit, concurrency)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


@dataclass
class _Pull:
    """One pull under way: where it reads and writes, the layers it made, when each blob arrived."""

    client: RegistryClient
    ref: Reference
    driver: Driver
    store: StoreLayers
    spool: Path
    id_prefix: str
    made: list[str]
    room: int  # a blob's size limit
    diff_ids: list[str]  # each layer's diff_id from the config, checked as it is applied
    fetched_at: list[int]  # perf_counter_ns() of the metadata's and each blob's arrival
    skipped: list[str] = field(default_factory=list)  # what the layers applied did not apply (`LayerStats.skipped`)

    def fetch(self, i: int, desc: Descriptor) -> tuple[Path, int]:
        """Download layer `i`'s blob into the spool (on a pool thread); its path and size."""
        dest = self.spool / f"{i}.blob"
        got = self.client.fetch_blob(self.ref, desc, dest, limit=self.room)
        self.fetched_at.append(perf_counter_ns())
        return dest, got

    def apply(self, i: int, desc: Descriptor, path: Path, parent: str | None, lower: LowerTree | None) -> str:
        """Make layer `i` on `parent` from its blob at `path`, and seal it; its id."""
        layer_id = f"{self.id_prefix}-{i}"
        root = self.driver.create_layer(layer_id, parent)
        self.made.append(layer_id)
        blob = LayerBlob(
            f"{self.ref}@{desc.digest}", path, 0, desc.size, desc.media_type, desc.digest, self.diff_ids[i]
        )
        stats = apply_blob(
            root,
            blob,
            self.driver.layer_format,
            symlinks="relative",
            limit=SizeLimit(max(self.room, 1), "the free disk"),
            lower=lower,
            opaque_xattr=self.driver.opaque_xattr,
        )
        self.skipped = [*self.skipped, *stats.skipped][:SKIPPED_LISTED]
        self.driver.seal_layer(layer_id)
        return layer_id


def _pull(
    client: RegistryClient,
    ref: Reference,
    driver: Driver,
    store: StoreLayers,
    spool: Path,
    id_prefix: str,
    made: list[str],
    limit: int | None,
    concurrency: int,
) -> Pulled:
    t0 = perf_counter_ns()
    manifest = client.manifest(ref)
    raw_config = parse_json(client.config(ref, manifest.config), f"{ref}: config")
    config = parse_config(f"{ref}: config", raw_config)
    descs = manifest.layers
    diff_ids = config_diff_ids(f"{ref}: config", raw_config, len(descs))  # each checked as its layer is applied
    chains = [tuple(d.digest for d in descs[: i + 1]) for i in range(len(descs))]
    first_new = next((i for i, chain in enumerate(chains) if chain not in store.by_chain), len(descs))
    room = limit if limit is not None else shutil.disk_usage(spool).free
    # the metadata's arrival: the end of the fetch if no blob is new
    pull = _Pull(client, ref, driver, store, spool, id_prefix, made, room, diff_ids, [perf_counter_ns()])
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="layerbench-pull") as pool:
        futures: dict[int, Future[tuple[Path, int]]] = {
            i: pool.submit(pull.fetch, i, descs[i]) for i in range(first_new, len(descs))
        }
        try:
            layers, top, apply_ns = _unpack(pull, descs, chains, first_new, futures)
        except BaseException:
            for f in futures.values():
                f.cancel()
            raise
    t_end = perf_counter_ns()
    t_fetched = max(pull.fetched_at)
    return Pulled(top, config, layers, t_fetched - t0, t_end - t_fetched, apply_ns, pull.skipped)


def _unpack(
    pull: _Pull,
    descs: tuple[Descriptor, ...],
    chains: list[tuple[str, ...]],
    first_new: int,
    futures: dict[int, Future[tuple[Path, int]]],
) -> tuple[list[PulledLayer], str, int]:
    """The image's layers in order: those the store has (`first_new` of them) taken as they are, each new
    one applied once its blob has arrived. The layers, the top one's id, and the ns spent applying."""
    parent: str | None = None
    lower: LowerTree | None = LowerTree() if pull.driver.layer_format is LayerFormat.DIFF else None
    layers: list[PulledLayer] = []
    apply_ns = 0
    for i, desc in enumerate(descs):
        if i < first_new:
            parent, kept = pull.store.by_chain[chains[i]]
            lower = copy.deepcopy(kept) if kept is not None else lower
            layers.append(PulledLayer(desc.digest, desc.size, parent, 0, True))
            continue
        path, got = futures[i].result()
        a0 = perf_counter_ns()
        layer_id = pull.apply(i, desc, path, parent, lower)
        apply_ns += perf_counter_ns() - a0
        os.unlink(path)
        pull.store.by_chain[chains[i]] = (layer_id, copy.deepcopy(lower) if lower is not None else None)
        layers.append(PulledLayer(desc.digest, desc.size, layer_id, got, False))
        parent = layer_id
    assert parent is not None
    return layers, parent, apply_ns


def parse_json(data: bytes, what: str) -> object:
    """`data` as JSON, or UserError naming `what`."""
    import json

    from layerbench.errors import UserError

    try:
        return json.loads(data)
    except ValueError:
        raise UserError(f"{what}: not JSON") from None
