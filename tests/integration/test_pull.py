"""Real images from Debian packages, a real registry (Debian's docker-registry), a shaped link, an engine-like pull.

The busybox images build in seconds; the registry is started by the tests. Timing claims are
ratios of the minimum of several pulls measured side by side, never a wall-clock threshold.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from layerbench.environment import RunEnvironment, applied
from layerbench.errors import UserError
from layerbench.images.config import READY_LABEL, config_of
from layerbench.images.debian import build_recipe, open_debian
from layerbench.images.oci import host_platform
from layerbench.images.registry_client import Reference, RegistryClient, client_for, open_reference
from layerbench.kernel.netshape import link_unavailable, parse_link
from layerbench.run.pull import StoreLayers, pull_image
from layerbench.run.registry import registry, registry_unavailable

from ..conftest import driver_on_store, require

pytestmark = pytest.mark.mounts
HOST_ARCH = host_platform()[1]
LAYERBENCH = [sys.executable, "-m", "layerbench"]


def _need_registry() -> None:
    if os.geteuid() != 0:
        pytest.skip("the registry tests need root (network namespaces, mounts)")
    if (why := registry_unavailable()) is not None:
        pytest.skip(why)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """The busybox and busybox-httpd layouts, built once for the module; and the work root they are under."""
    _need_registry()
    root = tmp_path_factory.mktemp("pull-work")
    try:
        with applied(RunEnvironment(work_root=root)):
            busybox, httpd = open_debian("busybox"), open_debian("busybox-httpd")
    except UserError as exc:  # no Debian mirror in reach: the image sources that need none are the user's
        pytest.skip(str(exc))
    assert busybox.layout is not None and httpd.layout is not None
    yield busybox.layout, httpd.layout, root


def test_busybox_image_is_real_layered_and_carries_its_config(images: tuple[Path, Path, Path]) -> None:
    busybox, httpd, root = images
    with applied(RunEnvironment(work_root=root)):
        image = open_debian("busybox")
    config = config_of(image)
    assert config is not None
    assert config.ready == "log:ready" and config.labels[READY_LABEL] == "log:ready"
    assert config.argv()[0] == "/bin/sh"
    files = image.file_paths()
    assert "usr/bin/busybox" in files and "etc/layerbench-recipe" in files
    assert image.layer_count == 2
    # busybox-httpd is the same base layer, byte for byte (the cache key is the recipe and the versions)
    assert _layer_digests(busybox)[0] == _layer_digests(httpd)[0]
    assert _layer_digests(busybox)[1] != _layer_digests(httpd)[1]


def test_the_same_recipe_builds_the_same_bytes(images: tuple[Path, Path, Path], tmp_path: Path) -> None:
    busybox, _, _ = images
    again = build_recipe("busybox", "gzip", tmp_path / "cache")
    assert again.name == busybox.name
    assert _layer_digests(again) == _layer_digests(busybox)


def test_no_mirror_is_one_line_naming_the_other_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if subprocess.run(["which", "apt-get"], capture_output=True).returncode != 0:
        pytest.skip("not a Debian host")
    conf = tmp_path / "apt.conf"
    conf.write_text('Acquire::http::Proxy "http://127.0.0.1:9";\nAcquire::https::Proxy "http://127.0.0.1:9";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))
    with pytest.raises(UserError) as err:
        build_recipe("busybox", "gzip", tmp_path / "cache")
    text = str(err.value)
    assert "\n" not in text and "cannot reach the Debian mirror" in text
    assert "docker-archive" in text and "oci" in text and "registry" in text


def _layer_digests(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    return [layer["digest"] for layer in manifest["layers"]]


def _pull_min_ns(layout: Path, link: str, work: Path, storage: Path, runs: int = 3) -> int:
    """The least pull_ns of `runs` cold pulls of `layout` over `link`, each into a store of its own layers."""
    best = None
    with (
        driver_on_store("overlay2", work / f"store-{link}") as (driver, _),
        registry(parse_link(link), work / f"reg-{link}", storage, None, f"t{link[:6]}") as reg,
    ):
        client, ref = client_for(reg.push(layout), insecure=True)
        for n in range(runs):
            made: list[str] = []
            pulled = pull_image(client, ref, driver, StoreLayers(), work / "spool", id_prefix=f"r{n}", created=made)
            best = pulled.pull_ns if best is None else min(best, pulled.pull_ns)
            assert pulled.transferred == pulled.image_bytes
            for layer in reversed(made):
                driver.remove(layer)
        client.close()
    assert best is not None
    return best


def test_a_ten_times_slower_link_makes_the_pull_at_least_five_times_longer(
    images: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    require("overlay2")
    if (why := link_unavailable()) is not None:
        pytest.skip(why)
    busybox, _, root = images
    fast = _pull_min_ns(busybox, "100mbit", tmp_path, root / "registry-storage")
    slow = _pull_min_ns(busybox, "10mbit", tmp_path, root / "registry-storage")
    assert slow >= 5 * fast, (fast, slow)


def _gets_s(address: str, n: int) -> float:
    """Seconds for `n` sequential `GET /v2/`, each on a fresh connection read to its end."""
    host, port = address.rsplit(":", 1)
    start = time.monotonic()
    for _ in range(n):
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0], answer[:200]
    return time.monotonic() - start


def test_a_link_with_a_delay_adds_it_to_every_request_and_answer(tmp_path: Path) -> None:
    """20 requests through 1gbit+50ms take at least 20 × 50 ms more than through 1gbit: only the proxy delays."""
    _need_registry()
    if (why := link_unavailable()) is not None:
        pytest.skip(why)
    took = {}
    for n, link in enumerate(("1gbit", "1gbit+50ms")):
        with registry(parse_link(link), tmp_path / f"reg-{n}", tmp_path / "storage", None, f"tdl{n}") as reg:
            assert reg.address.endswith(":5000") and not reg.address.startswith("127.")
            took[link] = min(_gets_s(reg.address, 20) for _ in range(3))
    assert took["1gbit+50ms"] - took["1gbit"] >= 20 * 0.050 * 0.95, took


def test_an_image_on_a_present_base_fetches_only_its_own_layers(
    images: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    require("overlay2")
    busybox, httpd, root = images
    with (
        driver_on_store("overlay2", tmp_path / "store") as (driver, _),
        registry(parse_link("loopback"), tmp_path / "reg", root / "registry-storage", None, "tbase") as reg,
    ):
        present = StoreLayers()
        client, ref = client_for(reg.push(busybox), insecure=True)
        first = pull_image(client, ref, driver, present, tmp_path / "spool", id_prefix="a")
        client2, ref2 = client_for(reg.push(httpd), insecure=True)
        second = pull_image(client2, ref2, driver, present, tmp_path / "spool", id_prefix="b")
        assert first.transferred == first.image_bytes > 1_000_000
        assert second.layers[0].existed and second.layers[0].transferred == 0
        assert second.layers[0].layer_id == first.layers[0].layer_id  # the base layer, shared in the store
        assert second.transferred < 0.2 * second.image_bytes
        assert second.config.ready == "http:8080/"
        # the pulled image is whole: a container of it sees the base's busybox and its own files
        driver.create_container("c", second.top)
        merged = driver.mount("c")
        try:
            assert (merged / "usr/bin/busybox").is_file()
            assert (merged / "etc/layerbench-recipe").read_text() == "busybox-httpd\n"
        finally:
            driver.unmount("c")
            driver.remove("c")
        client.close()
        client2.close()


# -- an untrusted registry ------------------------------------------------------------------------


class _Lying(http.server.BaseHTTPRequestHandler):
    """A registry whose layer blob is not what its manifest says (and, with `index`, an index of two platforms)."""

    blobs: ClassVar[dict[str, bytes]] = {}
    manifest: ClassVar[bytes] = b""
    index: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        if self.path.endswith("/manifests/multi") and self.index:
            body, ctype = self.index, "application/vnd.oci.image.index.v1+json"
        elif self.path.endswith("/manifests/latest"):
            body, ctype = self.manifest, "application/vnd.oci.image.manifest.v1+json"
        elif "/manifests/sha256:" in self.path:
            body, ctype = self.blobs.get(self.path.rsplit("/", 1)[1], b""), "application/vnd.oci.image.manifest.v1+json"
        elif "/blobs/" in self.path:
            body, ctype = self.blobs.get(self.path.rsplit("/", 1)[1], b""), "application/octet-stream"
        else:
            body, ctype = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def lying_registry() -> Iterator[str]:
    config = json.dumps({"config": {}, "rootfs": {"type": "layers", "diff_ids": [_digest(b"")]}}).encode()
    claimed, sent = b"the bytes the manifest names" * 10, b"other bytes, same length!!!!" * 10
    _Lying.blobs = {_digest(config): config, _digest(claimed): sent}
    _Lying.manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(claimed),
                    "size": len(claimed),
                }
            ],
        }
    ).encode()
    other = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()  # another platform's: not taken
    _Lying.blobs |= {_digest(_Lying.manifest): _Lying.manifest, _digest(other): other}
    _Lying.index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(other),
                    "size": len(other),
                    "platform": {"os": "linux", "architecture": "s390x" if HOST_ARCH != "s390x" else "arm64"},
                },
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(_Lying.manifest),
                    "size": len(_Lying.manifest),
                    "platform": {"os": "linux", "architecture": HOST_ARCH},
                },
            ],
        }
    ).encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Lying)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_blob_that_does_not_match_its_digest_is_refused_in_one_line(lying_registry: str, tmp_path: Path) -> None:
    client = RegistryClient(lying_registry, insecure=True)
    ref = Reference.parse(f"{lying_registry}/app:latest")
    manifest = client.manifest(ref)
    assert json.loads(client.config(ref, manifest.config))["config"] == {}  # the config is what it says
    with pytest.raises(UserError) as err:
        client.fetch_blob(ref, manifest.layers[0], tmp_path / "blob")
    assert "does not match its digest" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "blob").exists()  # nothing of it is kept
    client.close()


def test_an_index_resolves_to_this_platform(lying_registry: str) -> None:
    client = RegistryClient(lying_registry, insecure=True)
    manifest = client.manifest(Reference.parse(f"{lying_registry}/app:multi"))
    assert manifest.digest == _digest(_Lying.manifest) and len(manifest.layers) == 1
    client.close()


def test_the_registry_source_fetches_a_users_image_by_reference(images: tuple[Path, Path, Path]) -> None:
    busybox, _, root = images
    with registry(parse_link("loopback"), root / "reg-src", root / "registry-storage", None, "tsrc") as reg:
        reference = reg.push(busybox)
        with applied(RunEnvironment(work_root=root)):
            image = open_reference(reference, insecure=True)
            with pytest.raises(UserError) as err:  # HTTPS to a registry that speaks HTTP: one line, no traceback
                open_reference(reference)
    assert "\n" not in str(err.value) and reference.split("/")[0] in str(err.value)
    assert image.layout is not None and _layer_digests(image.layout) == _layer_digests(busybox)
    config = config_of(image)
    assert config is not None and config.ready == "log:ready"
    assert "usr/bin/busybox" in image.file_paths()


def test_bad_references_are_one_line() -> None:
    for bad in ("no-slash", "host:5000/UPPER:tag", "host:5000/app@sha256:short", "ho st/app"):
        with pytest.raises(UserError) as err:
            Reference.parse(bad)
        assert "\n" not in str(err.value)
    ok = Reference.parse("127.0.0.1:5000/team/app:1.2@sha256:" + "a" * 64)
    assert (ok.host, ok.name, ok.tag) == ("127.0.0.1:5000", "team/app", "1.2")


# -- SIGKILL, then cleanup ------------------------------------------------------------------------

PULLS = """
name = "pulls"
description = "Pull busybox over a shaped link with a delay, forever, to be killed in the middle."
[image]
source = "debian"
recipe = "busybox"
[repeat]
samples = 100000
warmup = 0
adaptive = false
[[step]]
op = "pull"
link = "10mbit+5ms"
"""


def _ledger_records(work: Path) -> list[dict[str, str]]:
    out = []
    for ledger in work.glob("run-*/ledger.jsonl"):
        for line in ledger.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _alive(ident: str) -> bool:
    """The process still runs (a zombie waiting for init to reap it has ended)."""
    pid, _, start = ident.partition(":")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start and fields[0] not in ("Z", "X")


def test_sigkill_mid_pull_then_cleanup_leaves_no_registry_proxy_namespace_or_veth(
    images: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    require("overlay2")
    if (why := link_unavailable()) is not None:
        pytest.skip(why)
    _, _, work = images
    scenario = tmp_path / "pulls.toml"
    scenario.write_text(PULLS)
    before = set(work.glob("run-*"))
    proc = subprocess.Popen(
        [*LAYERBENCH, "run", str(scenario), "-d", "overlay2", "--work-root", str(work), "--results-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the registry serves and a pull is on its way
            kinds = {r.get("kind") for r in _ledger_records(work) if r.get("op") == "make"}
            if {"daemon", "netns", "veth"} <= kinds and list(work.glob("run-*/*/spool/*")):
                proxies = [p for p in os.listdir("/proc") if p.isdigit() and _is_our_proxy(p)]
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never started its registry")
    finally:
        proc.kill()
        proc.wait()
    made = [r for r in _ledger_records(work) if r.get("op") == "make"]
    netns = [r["path"] for r in made if r["kind"] == "netns"]
    veths = [r["path"] for r in made if r["kind"] == "veth"]
    daemons = [r["path"] for r in made if r["kind"] == "daemon"]
    assert len(daemons) == 2  # the registry and the delaying proxy in front of it
    assert proxies and all(f"{p}:" in " ".join(daemons) for p in proxies)  # the proxy ran, a daemon entry
    assert os.path.exists(f"/run/netns/{netns[0]}")  # SIGKILL left it: cleanup's work is real
    out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"removed network namespace {netns[0]}" in out.stdout
    for name in netns:
        assert not os.path.exists(f"/run/netns/{name}")
    for name in veths:
        assert subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0
    for ident in daemons:
        assert not _alive(ident)
    assert not [p for p in proxies if _is_our_proxy(p)]
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(work) in line]
    assert set(work.glob("run-*")) <= before


def test_the_shared_base_scenario_decides_its_claim_from_real_pulls(
    images: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    require("overlay2")
    from layerbench.analysis.claims import HELD, evaluate

    _, _, work = images
    out = subprocess.run(
        [
            *LAYERBENCH,
            "run",
            "pull-shared-base",
            "--quick",
            "-d",
            "overlay2",
            "--work-root",
            str(work),
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (path,) = tmp_path.rglob("*.json")
    doc = json.loads(path.read_text())
    (c,) = doc["cells"]
    assert c["params"] == {"link": "loopback"}  # the link is a cell dimension
    metrics = c["metrics"]
    assert min(metrics["pulled_bytes"]["samples"]) > 1_000_000  # each sample pulls the whole first image again
    assert max(metrics["second_pulled_layer0_bytes"]["samples"]) == 0
    (row,) = [r for r in evaluate(doc) if r["claim"].startswith("An image whose base")]
    assert row["verdict"] == HELD, row


FAILS_AFTER_PULL = """
name = "fails-after-pull"
description = "A pull over a shaped link, then a step that fails: the cell's error must not leave the registry."
[image]
source = "debian"
recipe = "busybox"
[repeat]
samples = 1
warmup = 0
adaptive = false
[[step]]
op = "pull"
link = "100mbit"
[[step]]
op = "start"
[[step]]
op = "expect"
path = "etc/layerbench-recipe"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"""


def test_a_failing_cell_stops_its_registry_and_removes_its_namespace(
    images: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    require("overlay2")
    if (why := link_unavailable()) is not None:
        pytest.skip(why)
    _, _, work = images
    scenario = tmp_path / "fails.toml"
    scenario.write_text(FAILS_AFTER_PULL)
    before, netns_before = set(work.glob("run-*")), _netns()
    out = subprocess.run(
        [*LAYERBENCH, "run", str(scenario), "-d", "overlay2", "--work-root", str(work), "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stdout[-1500:] + out.stderr[-1500:]
    (path,) = tmp_path.rglob("*.json")
    (cell,) = json.loads(path.read_text())["cells"]
    assert cell["status"] == "error" and "etc/layerbench-recipe" in cell["error"]
    assert cell["metrics"]["pulled_bytes"]["samples"]  # it did pull before it failed
    assert not set(work.glob("run-*")) - before  # the run's directory and ledger are gone: all released
    assert _netns() <= netns_before  # its namespace (and the veth in it) went with the cell
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_our_registry(p, work)]


def _netns() -> set[str]:
    return {n for n in os.listdir("/run/netns") if n.startswith("lb-")} if os.path.isdir("/run/netns") else set()


def _is_our_proxy(pid: str) -> bool:
    """A delaying proxy (run/delayproxy.py) of a namespace this module's runs made (lb-<tag>, 10.213.x.x)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"layerbench.run.delayproxy" in cmd and any(p.startswith(b"10.213.") for p in cmd)


def _is_our_registry(pid: str, work: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"docker-registry" in part for part in cmd) and any(str(work).encode() in p for p in cmd)


def test_a_pulled_layer_whose_diff_id_lies_is_refused_in_one_line(tmp_path: Path) -> None:
    """The blob matches its digest; its uncompressed bytes do not match the config's diff_id (issue 20)."""
    from ..image_files import LIE, TRUE, lying_layout, sha

    _need_registry()
    require("overlay2")
    layout = lying_layout(tmp_path / "img", {"type": "layers", "diff_ids": [sha(LIE)]})
    with (
        driver_on_store("overlay2", tmp_path / "store") as (driver, _),
        registry(parse_link("loopback"), tmp_path / "reg", tmp_path / "registry-storage", None, "tlie") as reg,
    ):
        client, ref = client_for(reg.push(layout), insecure=True)
        made: list[str] = []
        with pytest.raises(UserError) as err:
            pull_image(client, ref, driver, StoreLayers(), tmp_path / "spool", created=made)
        client.close()
        for layer in reversed(made):
            driver.remove(layer)
    assert str(err.value).endswith(f": uncompressed content does not match its diff_id {sha(LIE)}"), err.value
    assert "\n" not in str(err.value) and sha(TRUE) != sha(LIE)


def test_a_pull_keeps_what_its_layers_did_not_apply(tmp_path: Path) -> None:
    from ..image_files import D, F, Layout, tar_bytes

    _need_registry()
    require("overlay2")
    lay = Layout()
    lay.index([lay.manifest([tar_bytes(D("hidden/", xattrs={"user.fuseoverlayfs.opaque": "y"}), F("hidden/a"))])])
    with (
        driver_on_store("overlay2", tmp_path / "store") as (driver, _),
        registry(parse_link("loopback"), tmp_path / "reg", tmp_path / "registry-storage", None, "tskip") as reg,
    ):
        client, ref = client_for(reg.push(lay.write_dir(tmp_path / "img")), insecure=True)
        made: list[str] = []
        try:
            pulled = pull_image(client, ref, driver, StoreLayers(), tmp_path / "spool", created=made)
        finally:
            client.close()
            for layer in reversed(made):
                driver.remove(layer)
    assert pulled.skipped == ["hidden: xattr user.fuseoverlayfs.opaque (fuse-overlayfs's own metadata)"]


@pytest.mark.parametrize("rt", ["crun", "builtin"])
def test_rootless_cells_pull_and_start_the_image_in_their_user_namespace(
    images: tuple[Path, Path, Path], tmp_path: Path, rt: str
) -> None:
    """overlay2-rootless pulls and starts the image inside its user namespace (the registry runs as root
    outside it); fuse-overlayfs cells run as root here. What the container's process ran on, from its own
    /proc files, is each cell's outcome."""
    from layerbench.plugins import default_plugins
    from layerbench.run import runtime

    if (why := runtime.unavailable(rt)) is not None:
        pytest.skip(why)
    expected = {
        "overlay2-rootless": "container root: overlay (nodev,nosuid), uid 0 = host uid 100000",
        "fuse-overlayfs": "container root: fuse.fuse-overlayfs (nodev,nosuid), uid 0 = host uid 0",
    }
    drivers = [d for d in expected if default_plugins().driver(d).probe() is None]
    if not drivers:
        pytest.skip("neither overlay2-rootless nor fuse-overlayfs can run here")
    _, _, work = images
    chosen = [x for d in drivers for x in ("-d", d)]
    where = ["--work-root", str(work), "--results-dir", str(tmp_path)]
    out = subprocess.run(
        [*LAYERBENCH, "run", "cold-start", *chosen, "-p", f"runtime={rt}", "--samples", "1", "--warmup", "0", *where],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (path,) = tmp_path.rglob("*.json")
    cells = {c["driver"]: c for c in json.loads(path.read_text())["cells"]}
    assert sorted(cells) == sorted(drivers)
    for driver, c in cells.items():
        assert c["status"] == "ok", c["error"]
        assert c["metrics"]["pulled_bytes"]["samples"][0] > 1_000_000  # busybox-static came over the link
        assert c["metrics"]["cold_start_ns"]["samples"][0] > c["metrics"]["pull_ns"]["samples"][0] > 0
        assert c["outcomes"]["step[1] run"] == {expected[driver]: 1}
