"""A fleet's credentials: a private certificate authority and the certificates of its head, devices and clients.

The engine executes code that a connected client sends it, so a fleet never listens without mutual TLS:
every connection presents a certificate signed by the fleet's own CA, and the other side checks it
(Dask's TLS comm requires a peer certificate both ways). `edgeprof fleet init` makes the CA, signs one
certificate per role, and then deletes the CA's private key: no one can mint another credential for
this fleet, and `init` again (into a new folder) is how to rotate them. The folder is copied to every
device and to every machine that submits sweeps; its keys are readable by their owner only.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from edgeprof.errors import ConfigError

ROLES = ("scheduler", "worker", "client")  # Dask's names: the head, a device, whoever submits sweeps
_VALID_DAYS = 825  # the longest validity common TLS stacks accept for a leaf certificate


def default_credentials_dir() -> Path:
    """`~/.config/edgeprof/fleet` (or `$EDGEPROF_CONFIG_DIR/fleet`), beside the user's catalogs."""
    from edgeprof.catalog import user_config_root

    return user_config_root() / "fleet"


@dataclass(frozen=True)
class FleetCredentials:
    """Where one fleet's certificate files are; `security(role)` turns them into the engine's settings."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def cert_file(self, role: str) -> Path:
        return self.folder / f"{role}.pem"

    def key_file(self, role: str) -> Path:
        return self.folder / f"{role}.key"

    def check(self, role: str) -> None:
        """One line saying what is missing, before the engine fails somewhere deeper."""
        for path in (self.ca_file, self.cert_file(role), self.key_file(role)):
            if not path.is_file():
                raise ConfigError(f"no fleet credentials at {self.folder} ({path.name} missing): run `edgeprof "
                                  "fleet init` on the head and copy its folder to every device and client")

    def security(self, role: str):
        """Dask `Security` for `role` with encryption required: a plain-TCP peer or one without a certificate
        signed by this fleet's CA is refused."""
        from distributed.security import Security

        self.check(role)
        files = {f"tls_{role}_cert": str(self.cert_file(role)), f"tls_{role}_key": str(self.key_file(role))}
        return Security(require_encryption=True, tls_ca_file=str(self.ca_file), tls_min_version=ssl.TLSVersion.TLSv1_2,
                        **files)


def init_credentials(folder: Path, overwrite: bool = False) -> FleetCredentials:
    """Make a CA and one certificate per role in `folder`, then forget the CA's key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    credentials = FleetCredentials(folder)
    if credentials.ca_file.exists() and not overwrite:
        raise ConfigError(f"{folder} already holds fleet credentials; give another folder, or --force to replace "
                          "them (every device must then get the new folder)")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeprof fleet CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .sign(ca_key, hashes.SHA256()))
    _write(credentials.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgeprof fleet {role}")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write(credentials.cert_file(role), cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(credentials.key_file(role), key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()), 0o600)
    return credentials


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
