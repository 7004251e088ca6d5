"""Certificates and keys for the local control plane, made with `cryptography`.

One CA signs the API server's serving certificate and one client certificate per identity.
RBAC's bootstrap policy already binds the well-known users (system:kube-controller-manager,
system:kube-scheduler) and the system:masters group, so identities need no extra RBAC.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
API_SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
API_SERVER_IPS = ("127.0.0.1", "10.96.0.1")


@dataclass(frozen=True)
class Identity:
    """A client certificate's subject: CN is the user, O the groups."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


IDENTITIES = (
    Identity("admin", "localcluster-admin", ("system:masters",)),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    Identity("kwok", "localcluster-kwok", ("system:masters",)),
)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


class Authority:
    """A certificate authority that writes <stem>.crt/<stem>.key pairs it signs."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name(name)
        usage = x509.KeyUsage(
            digital_signature=True,
            key_cert_sign=True,
            crl_sign=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            _builder(self._name, self._name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(self._key, hashes.SHA256())
        )
        _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(directory / "ca.key", _pem_key(self._key), private=True)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def issue(
        self,
        stem: str,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(subject, self._name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        _write(self.directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(self.directory / f"{stem}.key", _pem_key(key), private=True)

    def serving(self, stem: str, names: tuple[str, ...], ips: tuple[str, ...]) -> None:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        self.issue(stem, _name(stem), ExtendedKeyUsageOID.SERVER_AUTH, sans)


def write_pki(directory: Path) -> None:
    """Write ca.{crt,key}, apiserver.{crt,key}, <identity>.{crt,key} and sa.{key,pub}."""
    ca = Authority(directory, "localcluster-ca")
    ca.serving("apiserver", API_SERVER_NAMES, API_SERVER_IPS)
    for ident in IDENTITIES:
        ca.issue(ident.file_stem, _name(ident.user, ident.groups), ExtendedKeyUsageOID.CLIENT_AUTH)

    # ServiceAccount token signing key pair (RSA: what every token consumer expects).
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(directory / "sa.key", _pem_key(sa_key), private=True)
    _write(
        directory / "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
