"""Webhooks to a real HTTPS receiver on loopback: the certificate is checked against the URL's name.

The test makes its own CA and two server certificates with the ``cryptography`` package (installed
with moto): one for ``localhost``, one for another name. ``SPOOL_WEBHOOK_CA_FILE`` trusts the CA and
``SPOOL_WEBHOOK_ALLOW`` lets ``localhost`` through. Spool connects to the checked address, sends the
name as SNI and Host, and refuses a certificate for another name or from a CA it does not trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from service.jobs import JobSpec
from service.services import Services
from service.webhooks import SIGNATURE_HEADER, deliver, verify
from tests.fixtures.hooks import receiver

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402


def _name(common: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, issuer: Any, issuer_key: Any, key: Any, *, ca: bool, names: list[Any]) -> Any:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: Any) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA file, and cert+key files of a server named ``localhost`` and of one named otherwise."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Spool test CA", _name("Spool test CA"), ca_key, ca_key, ca=True, names=[])
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(_pem(ca))
    for label, names in (
        ("localhost", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("other", [x509.DNSName("hooks.other.example")]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(label, ca.subject, ca_key, key, ca=False, names=names)
        path = folder / f"{label}.pem"
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(_pem(cert) + key_pem)
        files[label] = path
    return files


def server_context(cert_file: Path, seen_names: list[str | None]) -> ssl.SSLContext:
    """A TLS server context with one certificate that records the SNI name each client sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    context.sni_callback = lambda sock, name, ctx: seen_names.append(name)
    return context


@pytest.fixture
def tls_services(settings: Settings, pki: dict[str, Path]) -> Iterator[Services]:
    svc = Services(settings.replace(webhook_allow=("localhost",), webhook_ca_file=str(pki["ca"])))
    yield svc
    svc.close()


def finished_job(svc: Services, url: str) -> str:
    job, _ = svc.jobs.create(JobSpec(text="x", webhook_url=url), owner="public", queue="tls-idle")
    svc.jobs.set_state(job.id, "failed", error_code="x", error_message="y")
    return job.id


def test_https_receiver_with_a_certificate_for_the_name_gets_a_signed_body(
    tls_services: Services, pki: dict[str, Path]
) -> None:
    svc = tls_services
    names: list[str | None] = []
    with receiver(tls=server_context(pki["localhost"], names)) as hook:
        job_id = finished_job(svc, hook.url + "/hook?token=t")
        assert deliver(svc, job_id, 1) is None
        hits = list(hook.hits)
    assert names and set(names) == {"localhost"}  # SNI: the URL's name, not the address connected to
    assert len(hits) == 1
    hit = hits[0]
    assert hit.path == "/hook?token=t" and hit.headers["Host"] == hook.url.split("//", 1)[1]
    assert verify(svc.settings.webhook_secret or "", hit.headers[SIGNATURE_HEADER], hit.body)
    assert json.loads(hit.body)["id"] == job_id
    record = svc.jobs.get(job_id)
    assert (record.webhook_state, record.webhook_last_status) == ("delivered", 204)


@pytest.mark.parametrize("case", ["certificate for another name", "CA not trusted"])
def test_https_receiver_spool_cannot_verify_is_never_sent_the_body(
    settings: Settings, pki: dict[str, Path], case: str
) -> None:
    other = case == "certificate for another name"
    ca_file = str(pki["ca"]) if other else ""
    svc = Services(settings.replace(webhook_allow=("localhost",), webhook_ca_file=ca_file))
    names: list[str | None] = []
    try:
        with receiver(tls=server_context(pki["other" if other else "localhost"], names)) as hook:
            job_id = finished_job(svc, hook.url + "/hook")
            assert deliver(svc, job_id, 1) == pytest.approx(settings.webhook_backoff)  # retried later
            assert hook.count() == 0  # the handshake failed: no request, no body
        assert "localhost" in names  # it did try, with the URL's name
        record = svc.jobs.get(job_id)
        assert (record.webhook_state, record.webhook_last_status) == ("retrying", None)
    finally:
        svc.close()
