"""The fleet's mutual TLS: every scheduler, worker and client holds a certificate of the fleet's CA.

A layerbench worker runs as root and executes what it is sent, so nothing of a fleet speaks
plain TCP: the scheduler (`layerbench scheduler`), each worker (`layerbench worker`) and the
client (`layerbench run --cluster`) take the fleet's CA, a certificate and its key (or Dask's
own `distributed.comm.tls.*` settings) and refuse to start without them. Dask then requires
encryption and a certificate the CA signed from every peer, both ways (docs/fleet.md, "Threat
model"). `make_fleet_certs` makes a CA and per-host certificates for people who have none.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerbench.errors import UserError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate
    from distributed import Security

__all__ = ["FleetTLS", "tls_address", "is_loopback", "make_fleet_certs", "CA_FILE", "DEFAULT_DAYS"]

CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"
DEFAULT_DAYS = 365
HOW = "layerbench fleet-certs DIR --host NAME makes them; docs/fleet.md"


@dataclass(frozen=True)
class FleetTLS:
    """The fleet's CA, and this machine's certificate and key, as PEM files."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_options(cls, ca: Path | None, cert: Path | None, key: Path | None, who: str) -> FleetTLS:
        """The three files from --tls-ca/--tls-cert/--tls-key, else from Dask's configuration; one line if neither."""
        if ca is None and cert is None and key is None:
            import dask.config

            tls = dask.config.get("distributed.comm.tls", default={}) or {}
            ca_cfg, client = tls.get("ca-file"), tls.get("client") or {}
            if ca_cfg and client.get("cert"):
                ca, cert = Path(ca_cfg), Path(client["cert"])
                key = Path(client.get("key") or client["cert"])
        if ca is None or cert is None or key is None:
            missing = [o for o, v in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)) if v is None]
            raise UserError(
                f"{who} speaks only mutual TLS (a worker runs what it is sent, as root): "
                f"pass {', '.join(missing)} ({HOW})"
            )
        for option, path in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
            try:
                with open(path, "rb") as f:
                    head = f.read(64)
            except OSError as exc:
                raise UserError(f"{option} {path}: {exc.strerror}") from None
            if b"-----BEGIN" not in head:
                raise UserError(f"{option} {path}: not a PEM file")
        return cls(ca, cert, key)

    def security(self) -> Security:
        """Dask's Security for any role (scheduler, worker, client): the CA checks every peer, both ways."""
        from distributed import Security

        files = {"cert": str(self.cert), "key": str(self.key)}
        return Security(
            tls_ca_file=str(self.ca),
            **{f"tls_{role}_{k}": v for role in ("scheduler", "worker", "client") for k, v in files.items()},
            require_encryption=True,
        )


def tls_address(address: str, option: str) -> str:
    """`tls://HOST:PORT` from `tls://HOST:PORT` or `HOST:PORT`; one line for another protocol."""
    if "://" not in address:
        address = f"tls://{address}"
    scheme, _, rest = address.partition("://")
    if scheme != "tls":
        raise UserError(
            f"{option} {address}: a fleet speaks only mutual TLS; use tls://{rest} with the fleet's certificates"
        )
    if not rest or rest.startswith(":"):
        raise UserError(f"{option} {address}: no host")
    return address


def address_host(address: str) -> str:
    """The host of `tls://HOST:PORT` (`[v6]` without brackets)."""
    rest = address.partition("://")[2] if "://" in address else address
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 or rest.startswith("[") else rest
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write a new file (never one that exists: a key is not overwritten by mistake)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise UserError(f"{path}: exists; remove it to make a new one") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_fleet_certs(folder: Path, hosts: list[str], days: int = DEFAULT_DAYS) -> list[Path]:
    """A fleet CA in `folder` (made, or the one there reused) and a certificate and key per host.

    Keys are 0600 and the folder 0700, so only their owner can use them. Returns the files made.
    """
    for host in hosts:
        if not host or not all(c.isalnum() or c in ".-_:" for c in host):
            raise UserError(f"--host {host!r}: use a host name or an IP address")
    _private_folder(folder)
    now = datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key, made = _fleet_ca(folder, now, days)
    for host in hosts:
        cert, key = _host_certificate(host, ca_cert, ca_key, now, days)
        key_path, cert_path = folder / f"{host}-key.pem", folder / f"{host}.pem"
        _write_private(key_path, _key_bytes(key), 0o600)
        _write_private(cert_path, _cert_bytes(cert), 0o644)
        made += [cert_path, key_path]
    return made


def _private_folder(folder: Path) -> None:
    """Make `folder` 0700, or check that the one there is a directory, the user's own and private."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{folder}: not a directory")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.geteuid() or folder.stat().st_mode & 0o077:
        raise UserError(f"{folder}: must be yours and private (0700): it holds the fleet's keys")


def _key_bytes(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_bytes(cert: Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _fleet_ca(
    folder: Path, now: datetime.datetime, days: int
) -> tuple[Certificate, EllipticCurvePrivateKey, list[Path]]:
    """The CA in `folder` (both its files, or neither: then made), its key, and the files made."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_path, ca_key_path = folder / CA_FILE, folder / CA_KEY_FILE
    if ca_path.exists() != ca_key_path.exists():
        have, lack = (ca_path, ca_key_path) if ca_path.exists() else (ca_key_path, ca_path)
        raise UserError(f"{folder}: has {have.name} but not {lack.name}; sign with both, or use a new folder")
    if ca_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise UserError(f"{ca_key_path}: not an EC key made by layerbench fleet-certs")
        return ca_cert, loaded, []
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layerbench fleet CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(ca_key_path, _key_bytes(ca_key), 0o600)
    _write_private(ca_path, _cert_bytes(ca_cert), 0o644)
    return ca_cert, ca_key, [ca_path, ca_key_path]


def _host_certificate(
    host: str, ca_cert: Certificate, ca_key: EllipticCurvePrivateKey, now: datetime.datetime, days: int
) -> tuple[Certificate, EllipticCurvePrivateKey]:
    """A new key for `host` and its certificate, signed by the CA, for serving and for connecting."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key
