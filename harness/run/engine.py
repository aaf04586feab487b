"""An engine's own pull and run: the optional capability the `pull` and `run` steps use when a driver has it.

A driver whose engine pulls and starts images with its own commands provides `EngineImages`:
Podman (drivers/podman.py: `podman pull`, `podman create` / `init` / `start`) and containerd's
snapshotters (drivers/containerd_snapshotter.py: `ctr images pull`, containerd's snapshot and
container record, crun). The steps then measure the engine instead of the harness's puller
(run/pull.py) and runtimes (run/runtime.py). Nothing else changes: the same registry and link,
the same ready conditions (run/ready.py), the same metric names, with these meanings —

- `pull_ns` is the engine's whole pull command, the fetch *and* the unpacking (the engine
  applies each layer as it arrives and says nothing in between that a clock could read):
  `podman pull docker://REF`, or `ctr images pull --plain-http --snapshotter NAME REF`
  (containerd's own client: the blobs into containerd's content store, each layer unpacked
  through the daemon's Diff service into the snapshotter named). `unpack_ns` and `apply_ns`
  are not recorded (absent, not 0), so a claim that needs the split (pulling's share of a cold
  start) leaves these cells out. `pulled_bytes` is what the engine's store recorded of each
  layer blob it did not have (containers-storage: the compressed stream it applied,
  `compressed-size`; containerd: the manifest's layer blobs its content store did not list
  before the pull, at the size it recorded); `image_pull_bytes` the manifest's layer sizes, as
  for the harness's pull.
- `create_ns` is the engine's create: `podman create` (its container record and container
  layer, no mount); on containerd what its client does for `ctr run` / `containers create`,
  through our gRPC client: `Snapshots.Prepare` of an active snapshot on the image's chain id,
  then `Containers.Create` of the record. `runtime_ns` is the start up to a process waiting to
  exec: `podman init` (the mount, conmon and the OCI runtime's create); on containerd
  `Snapshots.Mounts`, those mounts made as containerd's shim makes them (in crun's private mount
  namespace), and `crun create`. `ready_ns` is its start to ready: `podman start --attach`;
  `crun start` on containerd. containerd's task service (a shim per container, which puts it in
  a cgroup) is not used: this machine's cgroup hierarchy is hybrid, which crun and the shims
  refuse, and cgroups belong to the machine; so our daemon runs without tasks and the harness's
  cgroup-free crun (run/runtime.py) stands where the shim's runtime call would be. A containerd
  cell measures containerd's pull and snapshots plus our crun, not containerd's task path.
  `read_bytes` counts the pages the start read of the layers' files (`image_files`), not of the
  engine's own records. `runtime` stays the OCI runtime (`crun`); `builtin` is the harness's
  own launcher, which these cells refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Protocol, runtime_checkable

from layerbench.images.config import parse_config
from layerbench.images.registry_client import Reference, RegistryClient
from layerbench.kernel import pagecache
from layerbench.run import ready
from layerbench.run.pull import Pulled, PulledLayer, parse_json
from layerbench.run.runtime import Container, seen_from_inside

__all__ = ["EngineImages", "EngineContainer", "EnginePulled", "Between", "pull", "start"]


@dataclass
class EnginePulled:
    """What an engine's pull did: its command's time, and the layer blobs it fetched (digest -> bytes read)."""

    pull_ns: int
    fetched: dict[str, int]


class EngineContainer(Container, Protocol):
    """A container the engine makes (`make`, timed as create_ns), initialises (`create`, runtime_ns),
    starts (`begin`) and stops (`stop`, after errors too); `noted` runs untimed between `create` and `begin`."""

    def make(self) -> None: ...

    def noted(self) -> None: ...


@runtime_checkable
class EngineImages(Protocol):
    """A driver whose engine pulls and runs images itself; the pull and run steps use it when present."""

    def pull_image(self, reference: str, image_id: str, created: list[str]) -> EnginePulled:
        """Pull `reference` (host:port/name:tag, the harness's plain-HTTP registry) into the store as the
        image `image_id`, appended to `created` once it exists; the command's time alone in pull_ns."""
        ...

    def image_files(self) -> Path:
        """The directory the store keeps its layers' files in: `read_bytes` counts what a start read there, not
        the engine's own records beside it (its database, its layer and image lists), which a cold start
        evicts and reads too."""
        ...

    def run_image(
        self, container_id: str, image_id: str, runtime: str, argv: tuple[str, ...], env: tuple[str, ...], cwd: str
    ) -> EngineContainer:
        """A container `container_id` of image `image_id` running `argv` (the image's Entrypoint + Cmd) with
        `env` in `cwd` through OCI runtime `runtime`, prepared: nothing runs yet. Once made,
        `remove(container_id)` removes it."""
        ...


def pull(engine: EngineImages, client: RegistryClient, ref: Reference, image_id: str, created: list[str]) -> Pulled:
    """The engine pulls `ref` as `image_id`; then, untimed, the manifest and config from the registry say which
    layers it had to fetch and how the image starts."""
    got = engine.pull_image(str(ref), image_id, created)
    manifest = client.manifest(ref)
    config = parse_config(f"{ref}: config", parse_json(client.config(ref, manifest.config), f"{ref}: config"))
    layers = [
        PulledLayer(d.digest, d.size, image_id, got.fetched.get(d.digest, 0), d.digest not in got.fetched)
        for d in manifest.layers
    ]
    return Pulled(image_id, config, layers, got.pull_ns, None, None)


@dataclass
class Between:
    """What the run step reads between the engine's init and start, untimed: the container's own files (a
    snapshot's or a copy's, made by the engine's create: new files under `image_files`, not `listed` when
    this was made, before the clock), their cached bytes then, and, with `notes`, what the created process
    sees (run/runtime.py)."""

    image_files: Path
    notes: list[str] | None
    listed: set[str] = field(init=False)  # the files there before the container: listed when this is made
    files: list[str] = field(default_factory=list)
    cached: int = 0

    def __post_init__(self) -> None:
        self.listed = set(pagecache.regular_files(self.image_files))

    def __call__(self, pid: int) -> None:
        if self.notes is not None:
            self.notes.append(seen_from_inside(pid))
        self.files = [f for f in pagecache.regular_files(self.image_files) if f not in self.listed]
        self.cached = pagecache.cached_bytes(self.files)


def start(
    box: EngineContainer, condition: str, timeout_s: float, between: Callable[[int], None] | None = None
) -> tuple[int, int, int]:
    """Make, initialise and start `box` until `condition` holds: (create_ns, runtime_ns, ready_ns). `between`
    gets the created process's pid between the clocks (`Between`)."""
    t0 = perf_counter_ns()
    box.make()
    t1 = perf_counter_ns()
    box.create()
    t2 = perf_counter_ns()
    box.noted()
    if between is not None:
        between(box.pid)
    t3 = perf_counter_ns()
    box.begin()
    ready.wait_ready(box, condition, timeout_s)
    t4 = perf_counter_ns()
    return t1 - t0, t2 - t1, t4 - t3
