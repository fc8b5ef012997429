"""A fleet's credentials: one certificate authority per role, and one bundle per role to ship.

The engine executes code that a connected client sends it, so a fleet never listens without mutual TLS,
and a certificate is good for its own role only. `edgeprof fleet init` makes three CAs (head, devices,
clients), signs one certificate with each, deletes the CAs' private keys (no one can mint another
credential; `init` into a new folder rotates them) and writes one bundle per role:

    head/    head.pem, head.key,     ca.pem = the devices' and the clients' CAs (whom the head accepts)
    device/  device.pem, device.key, ca.pem = the head's CA (the only peer a device accepts)
    client/  client.pem, client.key, ca.pem = the head's CA

What each trust store holds is the first fence: a device accepts only the head (another device or a
client is refused in the TLS handshake), and a client or device talks only to a genuine head. The head
must accept both devices and clients; it tells them apart by the CA that signed the peer's certificate
and lets a device's connections carry only what a device sends (`head.py`). So a stolen device bundle
joins as a device and nothing more. Each machine gets only its role's folder.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from edgeprof.errors import ConfigError

BUNDLES = ("head", "device", "client")
# Dask's name for each role (the scheduler, a worker, whoever submits) -> the bundle that holds it.
DASK_ROLES = {"scheduler": "head", "worker": "device", "client": "client"}
TRUSTS = {"head": ("device", "client"), "device": ("head",), "client": ("head",)}  # whose CA each bundle holds
_VALID_DAYS = 825  # the longest validity common TLS stacks accept for a leaf certificate


def ca_name(bundle: str) -> str:
    """The common name of the CA that signs `bundle`'s certificate: how the head tells a peer's role."""
    return f"edgeprof fleet {bundle} CA"


def default_credentials_dir() -> Path:
    """`~/.config/edgeprof/fleet` (or `$EDGEPROF_CONFIG_DIR/fleet`), beside the user's catalogs."""
    from edgeprof.catalog import user_config_root

    return user_config_root() / "fleet"


@dataclass(frozen=True)
class FleetCredentials:
    """Where one fleet's certificate files are: the folder `fleet init` wrote (holding `head/`, `device/`,
    `client/`), or one role's bundle folder itself; `security(role)` turns them into the engine's settings."""

    folder: Path

    def bundle(self, role: str) -> Path:
        """The folder holding `role`'s files (`role` is a bundle name or Dask's name for it)."""
        name = DASK_ROLES.get(role, role)
        return self.folder if (self.folder / f"{name}.pem").exists() else self.folder / name

    def ca_file(self, role: str) -> Path:
        return self.bundle(role) / "ca.pem"

    def cert_file(self, role: str) -> Path:
        return self.bundle(role) / f"{DASK_ROLES.get(role, role)}.pem"

    def key_file(self, role: str) -> Path:
        return self.bundle(role) / f"{DASK_ROLES.get(role, role)}.key"

    def check(self, role: str) -> None:
        """One line saying what is missing, before the engine fails somewhere deeper."""
        name = DASK_ROLES.get(role, role)
        if (self.folder / "worker.pem").exists() or (self.folder / "scheduler.key").exists():
            raise ConfigError(f"{self.folder} holds fleet credentials of an older edgeprof, in which any device "
                              "could act as a client: run `edgeprof fleet init --credentials NEW_FOLDER` and ship "
                              "each machine its role's folder")
        for path in (self.ca_file(role), self.cert_file(role), self.key_file(role)):
            if not path.is_file():
                raise ConfigError(f"no fleet credentials at {self.folder} for the {name} ({path.name} missing): run "
                                  f"`edgeprof fleet init` on the head and copy its {name}/ folder here (or pass --credentials)")

    def security(self, role: str):
        """Dask `Security` for `role` (Dask's name) with encryption required: a plain-TCP peer, or one without a
        certificate of a CA this role trusts, is refused."""
        from distributed.security import Security

        self.check(role)
        dask_role = {bundle: dask for dask, bundle in DASK_ROLES.items()}.get(role, role)
        files = {f"tls_{dask_role}_cert": str(self.cert_file(role)), f"tls_{dask_role}_key": str(self.key_file(role))}
        return Security(require_encryption=True, tls_ca_file=str(self.ca_file(role)),
                        tls_min_version=ssl.TLSVersion.TLSv1_2, **files)


def init_credentials(folder: Path, overwrite: bool = False) -> FleetCredentials:
    """Make a CA per role, sign one certificate with each, forget the CAs' keys, and write the three bundles."""
    from cryptography.hazmat.primitives import serialization

    credentials = FleetCredentials(folder)
    if any((folder / name).exists() for name in (*BUNDLES, "ca.pem")) and not overwrite:
        raise ConfigError(f"{folder} already holds fleet credentials; give another folder, or --force to replace "
                          "them (every device must then get the new device/ folder)")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for stale in ("ca.pem", *(f"{r}.{e}" for r in ("scheduler", "worker", "client") for e in ("pem", "key"))):
        (folder / stale).unlink(missing_ok=True)  # an older edgeprof's single-CA files
    cas = {}
    for name in BUNDLES:
        ca_cert, cert, key = _issue(name)
        cas[name] = ca_cert.public_bytes(serialization.Encoding.PEM)
        bundle = folder / name
        bundle.mkdir(exist_ok=True)
        os.chmod(bundle, 0o700)
        _write(bundle / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(bundle / f"{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()), 0o600)
    for name in BUNDLES:
        _write(folder / name / "ca.pem", b"".join(cas[trusted] for trusted in TRUSTS[name]), 0o644)
    return credentials


def _issue(role: str):
    """A fresh CA for `role` and the one certificate it signs (its key is dropped when this returns)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name(role))])
    ca_cert = (x509.CertificateBuilder().subject_name(issuer).issuer_name(issuer)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                                     x509.NameAttribute(NameOID.COMMON_NAME, f"edgeprof fleet {role}")]))
            .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return ca_cert, cert, key


def peer_role(peercert: dict | None) -> str | None:
    """The bundle whose CA signed a verified peer certificate (`ssl.SSLSocket.getpeercert()`), or None.

    Sound because the listener's trust store holds only this fleet's CAs, each with its own name: a
    certificate naming one of them as issuer verified only if that CA's key signed it."""
    for rdn in (peercert or {}).get("issuer", ()):
        for key, value in rdn:
            if key == "commonName":
                return next((name for name in BUNDLES if value == ca_name(name)), None)
    return None


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
