"""Untrusted image archives stay within bounded memory and fail in one line (issue 20)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from layerbench.errors import UserError
from layerbench.images import oci
from layerbench.images.oci import read_image


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
