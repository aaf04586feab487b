"""Untrusted image archives stay within bounded memory and fail in one line (issue 20)."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from layerbench.cli import main
from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images import oci
from layerbench.images.oci import apply_tar_layer, read_image

from .image_files import (
    F,
    docker_archive,
    tar_bytes,
)


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def test_a_huge_pax_header_in_a_sparse_archive_is_refused_before_it_is_read(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    size = 64 << 20  # 4 KiB on disk; tarfile alone reads the whole header block into memory
    with open(archive, "wb") as f:
        f.write(_header("././@PaxHeader", size, tarfile.XHDTYPE))
        f.truncate(512 + size + 1024)
    assert archive.stat().st_blocks * 512 < 1 << 20
    with pytest.raises(UserError, match=rf"^{archive}: a tar header block of 64.0 MiB \(at most 16.0 MiB\)$"):
        read_image(archive)


def test_an_archive_of_too_many_files_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oci, "MAX_ARCHIVE_MEMBERS", 10)
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(11):
            tar.addfile(tarfile.TarInfo(f"f{i}"))
    with pytest.raises(UserError, match=rf"^{archive}: more than 10 files in the archive; not an image$"):
        read_image(archive)


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_deeply_nested_manifest_is_one_line(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "img.tar", {"manifest.json": b"[" * 100_000 + b"]" * 100_000})
    with pytest.raises(UserError, match=r"manifest.json: JSON nested too deep for image metadata$"):
        read_image(archive)


def test_a_docker_archive_without_config_or_with_a_malformed_one_is_one_line(tmp_path: Path) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w"):
        pass
    manifest = json.dumps([{"RepoTags": 7, "Layers": ["l/layer.tar"]}]).encode()
    archive = _archive(tmp_path / "a.tar", {"manifest.json": manifest, "l/layer.tar": layer.getvalue()})
    with pytest.raises(UserError, match=r"the image names no Config, so its layers cannot be checked \(diff_ids\)$"):
        read_image(archive)
    manifest = json.dumps([{"Config": "c.json", "Layers": ["l/layer.tar"]}]).encode()
    files = {"manifest.json": manifest, "c.json": b'{"rootfs": []}', "l/layer.tar": layer.getvalue()}
    with pytest.raises(UserError, match=r"c.json: rootfs.diff_ids is missing or not a list of digests$"):
        read_image(_archive(tmp_path / "b.tar", files))


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("uid", 1 << 40, "uid 1099511627776 is not a user or group id"),
        ("gid", 1 << 32, r"gid 4294967296 is not a user or group id \(0 to 4294967294\)$"),
        ("gid", -1, r"gid -1 is not a user or group id \(0 to 4294967294\)$"),
        ("mtime", 1e19, r"mtime 1e\+19 is not a time a file can have$"),
        ("mtime", -1e19, r"mtime -1e\+19 is not a time a file can have$"),
        ("devmajor", 1 << 20, "device number 1048576:0 does not fit a dev_t"),
        ("devminor", 1 << 20, r"device number 0:1048576 does not fit a dev_t \(major <= 4095, minor <= 1048575\)$"),
    ],
    ids=["uid", "gid", "gid-negative", "mtime", "mtime-negative", "devmajor", "devminor"],
)
def test_odd_owner_time_and_device_numbers_are_one_line(tmp_path: Path, field: str, value: object, why: str) -> None:
    info = tarfile.TarInfo("n")
    info.type = tarfile.CHRTYPE
    setattr(info, field, value)
    with pytest.raises(UserError, match=rf"entry 'n': {why}"):
        apply_tar_layer(tmp_path, io.BytesIO(_one(info)), LayerFormat.FULL)


def _one(info: tarfile.TarInfo) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)
    return out.getvalue()


def _sparse_member(name: str, realsize: int, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    """A PAX 1.0 GNU sparse member: `data` at offset 0, then a hole to `realsize` (a few blocks in the tar)."""
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(realsize),
    }
    sparse_map = f"1\n0\n{len(data)}\n".encode()
    payload = sparse_map + bytes(-len(sparse_map) % 512) + data
    info.size = len(payload)
    return info, payload


SPARSE_SCENARIO = """
name = "sparse"
description = "An image whose layer declares a file far larger than the layer's bytes."
[image]
source = "docker-archive"
path = "sparse.tar"
[[step]]
op = "usage"
"""


def test_run_refuses_a_sparse_member_over_the_limit_before_any_store(tmp_path: Path) -> None:
    """A sparse member writes more than its layer reads: refused when the image is sized, exit 2, no store."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info, payload = _sparse_member("big", 8 << 20)
        tar.addfile(info, io.BytesIO(payload))
    assert len(layer.getvalue()) < 64 << 10
    docker_archive(tmp_path / "sparse.tar", {"sparse:1": [layer.getvalue()]})
    (tmp_path / "sparse.toml").write_text(SPARSE_SCENARIO)
    r = _refused_before_any_store(tmp_path, "sparse.toml", "--max-image-bytes", "1M")
    assert re.fullmatch(
        rf"layerbench: error: {re.escape(str(tmp_path))}/sparse\.tar:[0-9a-f]{{64}}/layer\.tar: over the image "
        r"size limit of 1\.0 MiB \(--max-image-bytes\): more than 1\.0 MiB written in this layer",
        r.stderr.strip(),
    ), r.stderr


def _refused_before_any_store(tmp_path: Path, scenario: str, *options: str) -> Result:
    """`layerbench run` of `scenario` (under tmp_path) on null: exit 2 in one line, no store made, no results."""
    work, res = tmp_path / "work", tmp_path / "res"
    args = ["run", str(tmp_path / scenario), "--driver", "null", *options]
    r = CliRunner().invoke(main, [*args, "--work-root", str(work), "--results-dir", str(res)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (r.exit_code, r.stderr)
    assert [p.name for p in work.iterdir()] == [".layerbench-work-root"]  # no store was made
    assert not res.exists() or not any(res.rglob("*.json"))
    return r


CORRUPT_ZSTD_SCENARIO = SPARSE_SCENARIO.replace("sparse.tar", "zstd.tar")


def test_a_corrupt_zstd_layer_in_a_legacy_docker_archive_is_one_line(tmp_path: Path) -> None:
    """`<id>/layer.tar` that starts as zstd and then is garbage: one line naming the layer, exit 2, no
    ZstdError traceback (issue 20, L3)."""
    good = tar_bytes(F("etc/conf", b"x" * 100_000), compress="zstd")
    corrupt = good[:24] + bytes(b ^ 0x5A for b in good[24:])  # the frame header stays, the blocks are garbage
    docker_archive(tmp_path / "zstd.tar", {"zstd:1": [corrupt]})
    (tmp_path / "zstd.toml").write_text(CORRUPT_ZSTD_SCENARIO)
    r = _refused_before_any_store(tmp_path, "zstd.toml")
    assert re.fullmatch(
        rf"layerbench: error: {re.escape(str(tmp_path))}/zstd\.tar:[0-9a-f]{{64}}/layer\.tar: "
        r"not a readable zstd stream: .+",
        r.stderr.strip(),
    ), r.stderr
    assert "Traceback" not in r.output + r.stderr and "ZstdError" not in r.stderr
