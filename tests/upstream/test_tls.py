"""TLS to upstreams is always verified; a credential's own CA bundle makes a private CA trusted."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.sandbox.generic import create_generic_app
from tests.conftest import GatewayFactory
from tests.upstream.helpers import add_credential


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def private_ca(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (its PEM file) and a server context whose certificate it signed."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _cert("test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca_name, ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    return tmp_path / "ca.pem", context


@pytest.fixture
async def https_upstream(aiohttp_server: Any, private_ca: tuple[Path, ssl.SSLContext]) -> str:
    server = await aiohttp_server(create_generic_app(), host="127.0.0.1", ssl=private_ca[1])
    return f"https://127.0.0.1:{server.port}/echo"


async def test_untrusted_certificate_is_502(make_gateway: GatewayFactory, https_upstream: str) -> None:
    """A certificate from an unknown CA fails verification: 502 upstream_unavailable."""
    gw = await make_gateway()
    await add_credential(gw, https_upstream)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 502
    assert "TLS" in (await resp.json())["error"]


async def test_credential_ca_bundle_is_trusted(
    make_gateway: GatewayFactory, https_upstream: str, private_ca: tuple[Path, ssl.SSLContext]
) -> None:
    """With ``ca_bundle`` naming the private CA, the same upstream is reached over verified TLS."""
    gw = await make_gateway(upstream={"ca_dir": str(private_ca[0].parent)})
    await add_credential(gw, https_upstream, ca_bundle=private_ca[0].name)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["headers"]["x-forwarded-proto"] == ["http"]


@pytest.mark.parametrize("ca_dir", [None, "inside"])
@pytest.mark.parametrize("bundle", ["/etc/passwd", "../outside.pem", "/nonexistent/x.pem"])
async def test_a_ca_bundle_outside_the_configured_directory_is_refused(
    make_gateway: GatewayFactory, https_upstream: str, tmp_path: Path, ca_dir: str | None, bundle: str
) -> None:
    """Refused on the path alone, the same way whether the file exists or not: no file-existence oracle."""
    (tmp_path / "inside").mkdir()
    gw = await make_gateway(upstream={"ca_dir": str(tmp_path / ca_dir) if ca_dir else None})
    body = {
        "id": "c",
        "provider": "rest",
        "base_url": https_upstream,
        "auth": {"type": "bearer", "token": "t"},
        "ca_bundle": bundle,
    }
    resp = await gw.client.post("/v1/credentials", json=body, headers=gw.auth())
    assert resp.status == 400
    error = await resp.json()
    assert error["field"] == "ca_bundle" and "passwd" not in error["error"]
