"""Image sources: OCI layouts and docker/podman save archives built here, digests checked."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from layerbench import environment
from layerbench.cli import main
from layerbench.driver import LayerFormat
from layerbench.environment import RunEnvironment
from layerbench.errors import UserError
from layerbench.images.image_sources import ArchiveImage, open_image, parse_size
from layerbench.images.oci import apply_blob, read_image, source_kind

from .image_files import (
    ARCH,
    DIFF,
    FULL,
    D,
    F,
    Layout,
    docker_archive,
    layers,
    needs_root,
    oci_layout,
    sha,
    tar_bytes,
)


def expect_final(root: Path) -> None:
    assert sorted(os.listdir(root)) == ["bin", "d", "etc"]
    assert sorted(os.listdir(root / "etc")) == ["new", "sh"]
    assert os.listdir(root / "d") == ["fresh"]
    assert (root / "etc/sh").read_bytes() == b"#!"
    assert (root / "bin/sh2").stat().st_ino == (root / "bin/sh").stat().st_ino


def apply_all(root: Path, blobs: list[Any], fmt: LayerFormat = FULL) -> None:
    for blob in blobs:
        apply_blob(root, blob, fmt)


# -- formats --------------------------------------------------------------------------------


def test_oci_layout_dir_of_three_layers_tar_gzip_zstd(tmp_path: Path) -> None:
    path = oci_layout(tmp_path / "img")
    blobs = read_image(path)
    assert [b.media_type.rsplit(".", 1)[-1] for b in blobs] == ["tar", "tar+gzip", "tar+zstd"]
    assert source_kind(path) == "oci-layout"
    root = tmp_path / "root"
    root.mkdir()
    apply_all(root, blobs)
    expect_final(root)


def test_oci_layout_inside_a_tar_and_ref_selection(tmp_path: Path) -> None:
    lay = Layout()
    a, b = lay.manifest(layers()), lay.manifest(layers()[:1])
    lay.index(
        [
            {
                **a,
                "annotations": {
                    "io.containerd.image.name": "docker.io/library/demo:1",
                    "org.opencontainers.image.ref.name": "1",
                },
            },
            {**b, "annotations": {"org.opencontainers.image.ref.name": "base"}},
        ]
    )
    archive = lay.write_tar(tmp_path / "img.tar")
    assert source_kind(archive) == "oci-layout"
    assert len(read_image(archive, ref="demo:1")) == 3 and len(read_image(archive, ref="base")) == 1
    with pytest.raises(UserError, match="2 images to choose from; name one"):
        read_image(archive)
    with pytest.raises(UserError, match="no image named 'nope'"):
        read_image(archive, ref="nope")


def test_nested_index_picks_this_machines_platform(tmp_path: Path) -> None:
    lay = Layout()
    here, other = lay.manifest(layers()), lay.manifest(layers()[:1])
    att = lay.manifest(layers()[:1])
    inner = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**other, "platform": {"os": "linux", "architecture": "mips64" if ARCH != "mips64" else "s390x"}},
            {**here, "platform": {"os": "linux", "architecture": ARCH}},
            {
                **att,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
        ],
    }
    lay.index([{"mediaType": inner["mediaType"], **lay.blob(json.dumps(inner).encode())}])
    assert len(read_image(lay.write_dir(tmp_path / "img"))) == 3


def test_docker_save_archive(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "save.tar", {"demo:1": layers()})
    assert source_kind(archive) == "docker-archive"
    blobs = read_image(archive)
    assert [b.name.rsplit(":", 1)[-1].endswith("/layer.tar") for b in blobs] == [True] * 3
    root = tmp_path / "root"
    root.mkdir()
    apply_all(root, blobs)
    expect_final(root)


def test_docker_save_several_images_and_symlinked_duplicate_layer(tmp_path: Path) -> None:
    base = layers()[0]
    archive = docker_archive(tmp_path / "save.tar", {"a:1": layers(), "b:2": [base, base]}, dup_symlink=True)
    with pytest.raises(UserError, match=r"2 images \(a:1, b:2\); name one"):
        read_image(archive)
    assert len(read_image(archive, ref="a:1")) == 3
    blobs = read_image(archive, ref="b:2")
    assert blobs[0].offset == blobs[1].offset  # the symlink member resolved to the first copy


def test_docker_25_archive_has_both_forms(tmp_path: Path) -> None:
    lay = Layout()
    tars = layers()
    m = lay.manifest(tars, how=("",))
    lay.index([{**m, "annotations": {"io.containerd.image.name": "docker.io/library/demo:1"}}])
    doc = json.loads(lay.files[f"blobs/sha256/{m['digest'][7:]}"])
    lay.files["manifest.json"] = json.dumps(
        [
            {
                "Config": f"blobs/sha256/{doc['config']['digest'][7:]}",
                "RepoTags": ["demo:1"],
                "Layers": [f"blobs/sha256/{d['digest'][7:]}" for d in doc["layers"]],
            }
        ]
    ).encode()
    archive = lay.write_tar(tmp_path / "img.tar")
    blobs = read_image(archive, ref="demo:1")
    assert [b.digest for b in blobs] == [sha(t) for t in tars]
    unpacked = lay.write_dir(tmp_path / "unpacked")
    assert source_kind(unpacked) == "oci-layout" and len(read_image(unpacked)) == 3


@needs_root
def test_blobs_apply_as_diff_layers(tmp_path: Path) -> None:
    blobs = read_image(oci_layout(tmp_path / "img"))
    diffs = []
    for i, blob in enumerate(blobs):
        diffs.append(tmp_path / f"diff{i}")
        diffs[-1].mkdir()
        apply_blob(diffs[-1], blob, DIFF)
    wh = (diffs[1] / "etc/conf").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(diffs[2] / "d", "trusted.overlay.opaque") == b"y"


def test_plain_directory_is_a_host_dir_source(tmp_path: Path) -> None:
    assert source_kind(tmp_path) == "directory"
    with pytest.raises(UserError, match="neither an OCI image layout"):
        read_image(tmp_path)


# -- bad input ------------------------------------------------------------------------------


def test_layer_digest_mismatch_is_refused(tmp_path: Path) -> None:
    path = oci_layout(tmp_path / "img")
    blob = read_image(path)[1]
    with open(blob.path, "r+b") as f:  # flip one byte, keep the size
        f.seek(blob.size // 2)
        byte = f.read(1)
        f.seek(blob.size // 2)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(UserError, match=r"blobs/sha256/[0-9a-f]{64}: does not match its digest sha256:"):
        read_image(path)


def test_docker_diff_id_mismatch_is_refused(tmp_path: Path) -> None:
    tars = layers()
    archive = docker_archive(tmp_path / "save.tar", {"demo:1": tars})
    data = archive.read_bytes()
    i = data.index(b"v1")  # etc/conf's content in the first layer
    archive.write_bytes(data[:i] + b"v2" + data[i + 2 :])
    image = open_image("docker-archive", archive)  # checked as the layers are first read, not in a pass of its own
    with pytest.raises(UserError, match="layer.tar: uncompressed content does not match its diff_id"):
        _ = image.total_bytes


def test_manifest_digest_mismatch_and_size_mismatch(tmp_path: Path) -> None:
    path = oci_layout(tmp_path / "img")
    index = json.loads((path / "index.json").read_text())
    m = index["manifests"][0]
    mpath = path / "blobs/sha256" / m["digest"][7:]
    doc = json.loads(mpath.read_text())
    doc["layers"][0]["size"] += 1
    mpath.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="content does not match its digest"):
        read_image(path)
    new = json.dumps(doc).encode()
    (path / "blobs/sha256" / sha(new)[7:]).write_bytes(new)
    index["manifests"][0].update(digest=sha(new), size=len(new))
    (path / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="bytes, the manifest says"):
        read_image(path)


def test_layer_path_leaving_the_image_is_refused(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "save.tar", {"demo:1": layers()})
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]
    manifest = json.loads(files["manifest.json"])
    manifest[0]["Layers"][0] = "../../etc/passwd"
    (tmp_path / "dir").mkdir()
    for name, data in {**files, "manifest.json": json.dumps(manifest).encode()}.items():
        (tmp_path / "dir" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / name).write_bytes(data)
    with pytest.raises(UserError, match="'../../etc/passwd' leaves the image"):
        read_image(tmp_path / "dir")
    manifest[0]["Layers"][0] = "escape/layer.tar"
    (tmp_path / "dir/manifest.json").write_text(json.dumps(manifest))
    os.symlink("/etc", tmp_path / "dir/escape")
    with pytest.raises(UserError, match="leads outside the image directory"):
        read_image(tmp_path / "dir")


def test_symlink_member_leaving_the_archive_is_refused(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "save.tar", {"demo:1": layers()})
    with tarfile.open(archive, "a") as tar:
        info = tarfile.TarInfo("evil/layer.tar")
        info.type, info.linkname = tarfile.SYMTYPE, "../../outside.tar"
        tar.addfile(info)
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    manifest[0]["Layers"][0] = "evil/layer.tar"
    data = json.dumps(manifest).encode()
    with tarfile.open(archive, "a") as tar:  # a later member of the same name wins
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="'evil/layer.tar' links outside the archive"):
        read_image(archive)


@pytest.mark.parametrize(
    "files, what",
    [
        ({"index.json": b"{}"}, "oci-layout has no imageLayoutVersion"),
        ({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": b"{nope"}, "index.json: not valid JSON"),
        (
            {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": b'{"manifests": 3}'},
            "field 'manifests' is missing or not a list",
        ),
        (
            {
                "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                "index.json": b'{"manifests": [{"digest": "sha256:../../x"}]}',
            },
            "malformed digest",
        ),
        (
            {
                "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                "index.json": json.dumps({"manifests": [{"digest": "sha256:" + "0" * 64}]}).encode(),
            },
            "is missing",
        ),
        ({"manifest.json": b'{"not": "a list"}'}, "manifest.json: not a list of images"),
        ({"manifest.json": b'[{"RepoTags": ["x:1"]}]'}, "field 'Layers' is missing"),
    ],
)
def test_malformed_metadata_is_one_line(tmp_path: Path, files: dict[str, bytes], what: str) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    if "oci-layout" not in files and "manifest.json" not in files:
        (tmp_path / "oci-layout").write_bytes(b"[]")
    with pytest.raises(UserError, match=what) as exc:
        read_image(tmp_path)
    assert "\n" not in str(exc.value)


def test_non_layer_media_type_is_refused(tmp_path: Path) -> None:
    lay = Layout()
    m = lay.manifest(layers()[:1], how=("",))
    doc = json.loads(lay.files[f"blobs/sha256/{m['digest'][7:]}"])
    doc["layers"][0]["mediaType"] = "application/vnd.example.wasm"
    lay.index([{"mediaType": doc["mediaType"], **lay.blob(json.dumps(doc).encode())}])
    with pytest.raises(UserError, match="layer media type 'application/vnd.example.wasm' is not a tar layer"):
        read_image(lay.write_dir(tmp_path / "img"))


def test_compressed_or_bogus_archive(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "save.tar", {"demo:1": layers()})
    gz = tmp_path / "save.tar.gz"
    gz.write_bytes(gzip.compress(archive.read_bytes()))
    with pytest.raises(UserError, match="save.tar.gz: a compressed archive; decompress it first"):
        read_image(gz)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="junk.tar: not a tar archive|neither an OCI"):
        read_image(junk)
    with pytest.raises(UserError, match="no such file"):
        source_kind(tmp_path / "missing")


# -- the image size limit ---------------------------------------------------------------------


@pytest.fixture
def image_limit() -> Iterator[Callable[[int | None], None]]:
    """Set the limit of images opened in this test (the run environment's); the default again after it."""
    with ExitStack() as scope:

        def limit(n: int | None) -> None:
            scope.enter_context(environment.applied(RunEnvironment(max_image_bytes=n)))

        yield limit


def _bomb_layout(path: Path) -> tuple[Path, str]:
    """An OCI layout whose second layer is 8 MiB of zeros in 8 KiB of gzip."""
    lay = Layout()
    tars = [tar_bytes(D("etc/"), F("etc/conf", bytes(512 << 10))), tar_bytes(F("zeros", bytes(8 << 20)))]
    lay.index([lay.manifest(tars, how=("gzip",))])
    lay.write_dir(path)
    return path, sha(gzip.compress(tars[1], mtime=0))[7:]


def test_a_decompression_bomb_is_refused_naming_layer_and_limit(
    tmp_path: Path, image_limit: Callable[[int | None], None]
) -> None:
    path, layer = _bomb_layout(tmp_path / "img")
    image_limit(1 << 20)
    image = open_image("oci", path)
    with pytest.raises(UserError) as exc:
        _ = image.total_bytes
    assert re.fullmatch(
        rf"{re.escape(str(path))}:blobs/sha256/{layer}: over the image size limit of 1\.0 MiB "
        r"\(--max-image-bytes\): more than 504\.0 KiB uncompressed in this layer after 520\.0 KiB "
        r"in the layers below",
        str(exc.value),
    )


def test_a_legacy_archive_bomb_stops_while_its_diff_id_is_checked(
    tmp_path: Path, image_limit: Callable[[int | None], None]
) -> None:
    bomb = gzip.compress(tar_bytes(F("zeros", bytes(8 << 20))))
    archive = docker_archive(tmp_path / "save.tar", {"bomb:1": [bomb]})
    image_limit(1 << 20)
    image = open_image("docker-archive", archive)
    with pytest.raises(UserError, match=r"save\.tar:[0-9a-f]{64}/layer\.tar: over the image size limit of 1\.0 MiB"):
        _ = image.total_bytes


def test_the_default_limit_is_the_free_disk_of_the_work_root(tmp_path: Path) -> None:
    with environment.applied(RunEnvironment(tmp_path / "gone" / "work")):  # removed since: its parent's disk
        image = open_image("oci", oci_layout(tmp_path / "img"))
    assert isinstance(image, ArchiveImage) and image.limit is not None
    assert image.limit.why == f"the free disk of the work root {tmp_path} less a margin"
    assert image.file_paths() == ["bin/sh", "d/fresh", "etc/new"]
    assert environment.current() == RunEnvironment()  # the run's environment ends with it


@pytest.mark.parametrize(
    "text, size", [("10G", 10 << 30), ("500M", 500 << 20), ("1.5GiB", 3 << 29), ("4096", 4096), ("64k", 64 << 10)]
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_is_one_line() -> None:
    with pytest.raises(UserError, match=r"^--max-image-bytes '10X': expected a size such as 500M, 10G"):
        parse_size("10X")


def test_run_refuses_a_bomb_image_before_any_cell(tmp_path: Path) -> None:
    _, layer = _bomb_layout(tmp_path / "img")
    (tmp_path / "bomb.toml").write_text(BOMB_SCENARIO)
    r = CliRunner().invoke(
        main,
        [
            "run",
            str(tmp_path / "bomb.toml"),
            "--driver",
            "null",
            "--max-image-bytes",
            "1M",
            "--work-root",
            str(tmp_path / "work"),
            "--results-dir",
            str(tmp_path / "res"),
        ],
    )
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.strip() == (
        f"layerbench: error: {tmp_path / 'img'}:blobs/sha256/{layer}: over the image size "
        "limit of 1.0 MiB (--max-image-bytes): more than 504.0 KiB uncompressed in this "
        "layer after 520.0 KiB in the layers below"
    )
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".layerbench-work-root"]  # no store was made
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*.json"))


BOMB_SCENARIO = """
name = "bomb"
description = "An image from outside that unpacks to far more than it weighs."
[image]
source = "oci"
path = "img"
[[step]]
op = "usage"
"""


@pytest.mark.parametrize("which", ["index.json", "a layer blob"])
def test_a_layout_file_that_is_a_fifo_is_named_as_not_a_regular_file(tmp_path: Path, which: str) -> None:
    """A fifo where a layout's file goes is refused without being opened (it would block), and the line says
    what it is: it said "is missing"."""
    path = oci_layout(tmp_path / "img")
    if which == "index.json":
        victim = path / "index.json"
    else:
        index = json.loads((path / "index.json").read_bytes())
        manifest = json.loads((path / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
        victim = path / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    victim.unlink()
    os.mkfifo(victim)
    with pytest.raises(UserError) as exc:
        read_image(path)
    name = "index.json" if which == "index.json" else victim.relative_to(path).as_posix()
    assert str(exc.value) == f"{path}: {name!r} is not a regular file"
