"""A small certificate authority for the hub: the broker's server certificate and device client certificates.

ECDSA P-256 keys (small, fast, understood by every TLS stack a device has) and
X.509 v3 certificates made with ``cryptography``. The CA signs:

- one server certificate for the broker, with the host names and IP addresses
  devices dial as subject alternative names (``serverAuth``);
- one client certificate per device whose common name is the device id
  (``clientAuth``): with ``use_identity_as_username`` Mosquitto takes the CN as the
  username, so the ACL's ``%u`` patterns isolate certificate devices too;
- a certificate revocation list for devices that were deleted.

Private keys leave as unencrypted PKCS#8 PEM; callers write them 0600.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeship.errors import InputError
from edgeship.fsutil import atomic_write_text

__all__ = [
    "CA_DAYS", "LEAF_DAYS", "MAX_COMMON_NAME", "CertificateAuthority", "IssuedCertificate", "ServerFiles",
    "fingerprint", "open_ca", "write_server_files",
]

CA_DAYS = 3650  # days the hub CA is valid
LEAF_DAYS = 825  # days a server or device certificate is valid (the CA/Browser Forum's old ceiling)
MAX_COMMON_NAME = 64  # characters in a certificate's CN (RFC 5280 ub-common-name); device ids may have 128


@dataclass(frozen=True)
class IssuedCertificate:
    cert_pem: str
    key_pem: str = field(repr=False)
    serial: int = 0


def fingerprint(cert_pem: str | bytes) -> str:
    """SHA-256 of the certificate's DER, lowercase hex (what ``openssl x509 -fingerprint -sha256`` shows)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode() if isinstance(cert_pem, str) else cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def open_ca(folder: Path, *, create: bool = True) -> CertificateAuthority:
    """The hub CA kept in ``folder`` (``ca.pem``, ``ca.key`` 0600); made there first when ``create``.

    The hub's workspace keeps it in ``broker-ca/``: ``edgeship hub broker-config`` puts
    its ``ca.pem`` on the broker's TLS listener, and the hub issues device certificates from it.
    """
    folder = Path(folder)
    ca_cert, ca_key = folder / "ca.pem", folder / "ca.key"
    if ca_cert.exists() and ca_key.exists():
        return CertificateAuthority.load(ca_cert.read_bytes(), ca_key.read_bytes())
    if ca_cert.exists() or ca_key.exists():
        raise InputError(f"The hub CA in {folder} has only one of ca.pem and ca.key; restore the pair.")
    if not create:
        raise InputError(f"There is no hub CA in {folder}; make one with 'edgeship hub broker-config --tls-host ...'.")
    ca = CertificateAuthority.create()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(ca_key, ca.key_pem, mode=0o600)
    atomic_write_text(ca_cert, ca.cert_pem)
    return ca


@dataclass(frozen=True)
class ServerFiles:
    """What a broker's TLS listener reads: the hub CA, its certificate and its key (0600)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def write_server_files(out: Path, ca: CertificateAuthority, hosts: Sequence[str], *,
                       also_client: bool = False) -> ServerFiles:  # fmt: skip
    """Issue a broker certificate for ``hosts`` and write ``ca.pem``, ``server.crt`` and ``server.key`` (0600) into
    ``out``, each atomically (Mosquitto's listener and every NATS node use these names)."""
    server = ca.issue_server(hosts, also_client=also_client)
    out.mkdir(parents=True, exist_ok=True)
    files = ServerFiles(ca_file=out / "ca.pem", cert_file=out / "server.crt", key_file=out / "server.key")
    atomic_write_text(files.ca_file, ca.cert_pem)
    atomic_write_text(files.cert_file, server.cert_pem)
    atomic_write_text(files.key_file, server.key_pem, mode=0o600)
    return files


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
        False,
    )  # fmt: skip
    flags.update(allowed)
    return x509.KeyUsage(**flags)


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class CertificateAuthority:
    """The hub CA: a self-signed certificate and its key."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self._key = key

    @classmethod
    def create(cls, common_name: str = "edgeship hub CA", *, days: int = CA_DAYS) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.now(timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: str | bytes, key_pem: str | bytes) -> CertificateAuthority:
        """Load a CA from its PEM files; refuses a key that does not belong to the certificate."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode() if isinstance(cert_pem, str) else cert_pem)
            key = serialization.load_pem_private_key(
                key_pem.encode() if isinstance(key_pem, str) else key_pem, password=None
            )
        except ValueError as exc:
            raise InputError(f"The hub CA certificate or key is not valid PEM ({exc}); check the files.") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise InputError("The hub CA key does not belong to the CA certificate; give the matching pair.")
        return cls(cert, key)

    @property
    def cert_pem(self) -> str:
        return _cert_pem(self.cert)

    @property
    def key_pem(self) -> str:
        return _key_pem(self._key)

    def issue_server(
        self, hosts: Sequence[str], *, days: int = LEAF_DAYS, also_client: bool = False
    ) -> IssuedCertificate:
        """A broker certificate valid for ``hosts`` (DNS names and IP addresses).

        ``also_client``: the certificate also authenticates its holder as a TLS client, which a NATS
        node needs on the routes to its peers (each side verifies the other; ADR 0048).
        """
        if not hosts:
            raise InputError("A server certificate needs at least one host name or IP address.")
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, *([ExtendedKeyUsageOID.CLIENT_AUTH] if also_client else [])]
        return self._issue(hosts[0], usages, days, names)

    def issue_client(self, device_id: str, *, days: int = LEAF_DAYS) -> IssuedCertificate:
        """A device certificate whose common name is ``device_id`` (its broker username).

        Never for a name reserved for the hub (``hub``, ``hub-*``): on a listener with
        ``use_identity_as_username`` the CN *is* the login, so such a certificate would
        carry the hub's rights (ADR 0015).
        """
        from edgeship.mqtt.identity import validate_new_device_id

        validate_new_device_id(device_id)
        if len(device_id) > MAX_COMMON_NAME:  # cryptography raised ValueError: a 500 from POST /devices
            raise InputError(
                f"Device id {device_id[:24]!r}... has {len(device_id)} characters, but a certificate's common name "
                f"holds at most {MAX_COMMON_NAME} (RFC 5280); use a shorter id or a password login."
            )
        return self._issue(device_id, [ExtendedKeyUsageOID.CLIENT_AUTH], days, [])

    def revocation_list(self, serials: Iterable[int], *, days: int = 30) -> str:
        """A PEM CRL naming revoked certificate serials (a broker's ``crlfile``); reissue before ``days``."""
        now = datetime.now(timezone.utc)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - timedelta(minutes=5))
            .next_update(now + timedelta(days=days))
        )
        for serial in sorted(set(serials)):
            revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - timedelta(minutes=5))
            builder = builder.add_revoked_certificate(revoked.build())
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()

    def _issue(
        self, common_name: str, usages: list[x509.ObjectIdentifier], days: int, names: list[x509.GeneralName]
    ) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(timezone.utc)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_agreement=ExtendedKeyUsageOID.SERVER_AUTH in usages),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(cert_pem=_cert_pem(cert), key_pem=_key_pem(key), serial=serial)
