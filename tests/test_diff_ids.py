"""Every layer's uncompressed bytes are checked against the config's diff_id, while they stream (issue 20).

An OCI layout's layer blobs are named by their (compressed) digest, which was checked; the
config's `rootfs.diff_ids` never were, so a layout whose config lies about its layers was
accepted. The same held for a `docker save` archive that names its layers
`blobs/sha256/<digest>` (Docker 25+): the name's digest was checked, the diff_id not. Now
each layer's diff_id goes with its blob and is checked in the pass that decompresses it
(the image's first sizing, before any store, and every application), never a pass of its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from click.testing import CliRunner

from layerbench.cli import main
from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images import layer_stream
from layerbench.images.image_sources import open_image
from layerbench.images.oci import apply_blob, read_image

from .image_files import (
    LIE,
    TRUE,
    docker_archive,
    layers,
    lying_layout,
    sha,
)


@pytest.mark.parametrize("how", ["", "gzip", "zstd"])
def test_an_oci_layer_whose_diff_id_lies_is_refused_before_any_store(tmp_path: Path, how: str) -> None:
    path = lying_layout(tmp_path / "img", {"type": "layers", "diff_ids": [sha(LIE)]}, (how,))
    image = open_image("oci", path)  # the stored bytes match their digest: only the diff_id tells
    with pytest.raises(UserError) as exc:
        _ = image.total_bytes  # the sizing a run does before it plans its stores
    assert re.fullmatch(
        rf"{re.escape(str(path))}:blobs/sha256/[0-9a-f]{{64}}: uncompressed content does not match its "
        rf"diff_id {sha(LIE)}",
        str(exc.value),
    )


def test_an_oci_layer_whose_diff_id_lies_is_refused_when_applied(tmp_path: Path) -> None:
    path = lying_layout(tmp_path / "img", {"type": "layers", "diff_ids": [sha(LIE)]})
    (blob,) = read_image(path)
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match=r"uncompressed content does not match its diff_id sha256:[0-9a-f]{64}$"):
        apply_blob(tmp_path / "root", blob, LayerFormat.FULL)


@pytest.mark.parametrize(
    ("rootfs", "why"),
    [
        (None, "rootfs.diff_ids is missing or not a list of digests"),
        ({"type": "layers", "diff_ids": []}, "0 diff_ids for 1 layers"),
        ({"type": "layers", "diff_ids": ["sha256:abc"]}, "unsupported or malformed digest 'sha256:abc'"),
    ],
)
def test_an_oci_config_without_good_diff_ids_is_one_line(tmp_path: Path, rootfs: Any, why: str) -> None:
    path = lying_layout(tmp_path / "img", {} if rootfs is None else rootfs)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:blobs/sha256/[0-9a-f]{{64}}: {re.escape(why)}$"):
        read_image(path)


def test_a_docker_archive_of_blob_paths_checks_the_diff_id_too(tmp_path: Path) -> None:
    good = docker_archive(tmp_path / "good.tar", {"x:1": [TRUE]}, blobs=True)
    assert [b.name.split(":")[-1] for b in read_image(good)] == [f"blobs/sha256/{sha(TRUE)[7:]}"]
    assert open_image("docker-archive", good).file_paths() == ["etc/conf"]
    bad = docker_archive(tmp_path / "bad.tar", {"x:1": [TRUE]}, blobs=True, diff_ids=[sha(LIE)])
    image = open_image("docker-archive", bad)
    with pytest.raises(UserError) as exc:
        _ = image.total_bytes
    assert str(exc.value) == (
        f"{bad}:blobs/sha256/{sha(TRUE)[7:]}: uncompressed content does not match its diff_id {sha(LIE)}"
    )


def test_each_layer_is_decompressed_once_to_open_and_size_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The diff_id is hashed in the sizing pass: no pass of its own (a legacy archive had one before)."""
    opened: list[str] = []
    real = layer_stream._decompressed  # every decompressing reader starts here

    def counting(fileobj: BinaryIO) -> BinaryIO:
        opened.append(getattr(fileobj, "name", "?"))
        return real(fileobj)

    monkeypatch.setattr(layer_stream, "_decompressed", counting)
    archive = docker_archive(tmp_path / "save.tar", {"demo:1": layers()})
    image = open_image("docker-archive", archive)
    assert image.file_paths() == ["bin/sh", "d/fresh", "etc/new"]
    assert len(opened) == 3


def test_a_config_that_lies_about_layers_scanned_before_is_still_refused(tmp_path: Path) -> None:
    """A scan is shared between cells by the layers' digests and diff_ids, never by the digests alone."""
    good = lying_layout(tmp_path / "good", None)
    assert open_image("oci", good).file_paths() == ["etc/conf"]
    bad = lying_layout(tmp_path / "bad", {"type": "layers", "diff_ids": [sha(LIE)]})  # the same layer blob
    assert [b.digest for b in read_image(bad)] == [b.digest for b in read_image(good)]
    with pytest.raises(UserError, match=r"uncompressed content does not match its diff_id"):
        _ = open_image("oci", bad).file_paths()


def test_run_refuses_a_lying_diff_id_before_any_store(tmp_path: Path) -> None:
    lying_layout(tmp_path / "img", {"type": "layers", "diff_ids": [sha(LIE)]})
    (tmp_path / "lie.toml").write_text(
        'name = "lie"\ndescription = "A config lying about its layer."\n'
        '[image]\nsource = "oci"\npath = "img"\n[[step]]\nop = "usage"\n'
    )
    work, res = tmp_path / "work", tmp_path / "res"
    args = ["run", str(tmp_path / "lie.toml"), "--driver", "null", "--work-root", str(work), "--results-dir", str(res)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (r.exit_code, r.stderr)
    assert re.fullmatch(
        rf"layerbench: error: {re.escape(str(tmp_path))}/img:blobs/sha256/[0-9a-f]{{64}}: uncompressed content "
        rf"does not match its diff_id {sha(LIE)}",
        r.stderr.strip(),
    )
    assert [p.name for p in work.iterdir()] == [".layerbench-work-root"]  # no store was made
