"""The fleet's TLS at the door: each way to start a fleet's part without it is one line; `fleet-certs`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from layerbench.cli import main
from layerbench.run.fleet_tls import is_loopback, make_fleet_certs

pytest.importorskip("distributed", reason="the fleet needs dask and distributed (the test extra)")

HOW = "(layerbench fleet-certs DIR --host NAME makes them; docs/fleet.md)"


def _err(args: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.stderr


def test_a_tls_cluster_address_without_tls_files_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path))  # no Dask configuration of this machine's
    code, err = _err(["run", "-d", "null", "--cluster", "tls://127.0.0.1:1", "--results-dir", str(tmp_path)])
    assert code == 2
    assert err == (
        "layerbench: error: --cluster speaks only mutual TLS (a worker runs what it is sent, as root): "
        f"pass --tls-ca, --tls-cert, --tls-key {HOW}\n"
    )


def test_a_plain_tcp_cluster_address_is_one_line(tmp_path: Path) -> None:
    code, err = _err(["run", "-d", "null", "--cluster", "tcp://10.0.0.1:8786", "--results-dir", str(tmp_path)])
    assert code == 2
    assert err == (
        "layerbench: error: --cluster tcp://10.0.0.1:8786: a fleet speaks only mutual TLS; "
        "use tls://10.0.0.1:8786 with the fleet's certificates\n"
    )


def test_tls_files_without_a_cluster_are_one_line(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_fleet_certs(certs, ["client"])
    code, err = _err(["run", "-d", "null", "--tls-ca", str(certs / "ca.pem"), "--results-dir", str(tmp_path)])
    assert code == 2 and err.endswith("pass --cluster ADDRESS too\n"), err


def test_a_tls_file_that_is_not_pem_is_one_line(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_fleet_certs(certs, ["client"])
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    args = ["--tls-ca", str(junk), "--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client-key.pem")]
    code, err = _err(["run", "-d", "null", "--cluster", "tls://127.0.0.1:1", *args, "--results-dir", str(tmp_path)])
    assert (code, err) == (2, f"layerbench: error: --tls-ca {junk}: not a PEM file\n")


def test_the_scheduler_and_a_worker_refuse_to_start_without_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path))
    code, err = _err(["scheduler", "--port", "0"])
    assert code == 2 and err.startswith("layerbench: error: layerbench scheduler speaks only mutual TLS"), err
    code, err = _err(["worker", "10.0.0.1:8786", "--work-root", str(tmp_path / "w")])
    assert code == 2
    if os.geteuid() == 0:
        assert err.startswith("layerbench: error: layerbench worker speaks only mutual TLS"), err
        assert err.endswith(f"pass --tls-ca, --tls-cert, --tls-key {HOW}\n"), err
    else:
        assert "run it as root" in err
    assert not (tmp_path / "w").exists()  # refused before anything was made


def test_a_worker_will_not_listen_on_every_interface(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("layerbench worker checks that it is root first")
    certs = tmp_path / "certs"
    make_fleet_certs(certs, ["h"])
    tls = ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / "h.pem"), "--tls-key", str(certs / "h-key.pem")]
    for every in ("0.0.0.0", "::"):
        code, err = _err(
            ["worker", "tls://127.0.0.1:1", "--work-root", str(tmp_path / "w"), "--listen-address", every, *tls]
        )
        assert (code, err) == (
            2,
            f"layerbench: error: --listen-address {every}: name one address to listen on, not every interface\n",
        )


def test_fleet_certs_makes_a_ca_and_host_certificates_it_signed_with_private_keys(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    r = CliRunner().invoke(main, ["fleet-certs", str(folder), "--host", "host-a", "--host", "10.0.0.2"])
    assert r.exit_code == 0, r.output
    names = {"ca.pem", "ca-key.pem", "host-a.pem", "host-a-key.pem", "10.0.0.2.pem", "10.0.0.2-key.pem"}
    assert {p.name for p in folder.iterdir()} == names
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all((folder / n).stat().st_mode & 0o777 == 0o600 for n in names if n.endswith("-key.pem"))
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for host, alt in (("host-a", x509.DNSName("host-a")), ("10.0.0.2", None)):
        cert = x509.load_pem_x509_certificate((folder / f"{host}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert alt is None or alt in sans
    # a second call adds a host under the same CA, and refuses to overwrite one
    r = CliRunner().invoke(main, ["fleet-certs", str(folder), "--host", "host-b"])
    assert r.exit_code == 0 and "ca.pem" not in r.output
    x509.load_pem_x509_certificate((folder / "host-b.pem").read_bytes()).verify_directly_issued_by(ca)
    r = CliRunner().invoke(main, ["fleet-certs", str(folder), "--host", "host-a"])
    assert (r.exit_code, r.stderr) == (
        2,
        f"layerbench: error: {folder}/host-a-key.pem: exists; remove it to make a new one\n",
    )


def test_loopback_names_and_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("0.0.0.0")


def test_fleet_certs_refuses_a_ca_without_its_key(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    make_fleet_certs(folder, [])
    (folder / "ca-key.pem").unlink()
    r = CliRunner().invoke(main, ["fleet-certs", str(folder), "--host", "h"])
    assert (r.exit_code, r.stderr) == (
        2,
        f"layerbench: error: {folder}: has ca.pem but not ca-key.pem; sign with both, or use a new folder\n",
    )
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem"]  # nothing made
