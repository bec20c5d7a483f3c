"""TLS on the API listener (issue 13): ``server/tls.py``, the CLI's sites, SIGHUP reload."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bittrade_feed import cli
from bittrade_feed.config import Config, ServerConfig, load_config
from bittrade_feed.errors import ConfigError
from bittrade_feed.server.app import create_app
from bittrade_feed.server.reload import reload_config, reload_tls
from bittrade_feed.server.state import TLS
from bittrade_feed.server.tls import server_context
from tests.childdaemon import config_dict, write_config
from tests.fakeexchange import FakeExchanges
from tests.test_cli import _socket_activated
from tests.test_streams import sim_config

NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("bittrade test CA"))
        .issuer_name(_name("bittrade test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], directory: Path, serial: int
) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 signed by ``ca``, written as cert.pem / key.pem."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def client_context(ca: x509.Certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())


async def _served_serial(port: int, trust: ssl.SSLContext) -> tuple[int, bytes]:
    """A new TLS connection's certificate serial and the first bytes of its SSE stream."""
    connector = aiohttp.TCPConnector(ssl=trust, force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"https://127.0.0.1:{port}/api/price-stream") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await resp.content.readuntil(b"\n\n")
        ssl_object = resp.connection.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        der = ssl_object.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number, first


async def test_tls_listener_serves_sse_and_a_reload_serves_the_new_certificate(
    tmp_path: Path,
) -> None:
    """The CLI's listener with server.tls_cert/tls_key serves SSE to a client trusting the
    test CA; after the files are renewed and reloaded a new connection gets the new one;
    a broken pair on reload is refused and the running certificate stays."""
    ca = make_ca()
    cert, key = issue(ca, tmp_path, serial=1001)
    port = unused_port()
    path = tmp_path / "feed.toml"
    path.write_text(
        f'[server]\nport = {port}\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'[database]\npath = "{tmp_path / "feed.sqlite3"}"\n'
        '[feed]\npairs = ["BTC-USD"]\nsources = { BTC-USD = ["simulated"] }\n'
        "[aggregation]\nquorum = 1\n"
    )
    config = load_config(path)
    app = create_app(config, fetch=False)
    trust = client_context(ca[1])
    runner = web.AppRunner(app, handle_signals=False)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        await runner.setup()
        await cli._listen(stack, app, runner, config)
        serial, first = await _served_serial(port, trust)
        assert serial == 1001
        assert b"retry: 3000\nevent: status\n" in first  # written by the hub, through TLS
        issue(ca, tmp_path, serial=1002)  # renewed in place, as certbot does
        assert (await reload_config(app, path))[1] is None  # what SIGHUP runs
        assert (await _served_serial(port, trust))[0] == 1002
        # A key that does not belong to the certificate: refused, 1002 stays.
        other = tmp_path / "other"
        other.mkdir()
        _, wrong_key = issue(ca, other, serial=1003)
        key.write_bytes(wrong_key.read_bytes())
        _, error = await reload_config(app, path)
        assert error is not None
        assert "server.tls_key" in error
        assert (await _served_serial(port, trust))[0] == 1002
        # A plain-HTTP client gets no stream from the TLS port.
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as plain:
                await plain.get(f"http://127.0.0.1:{port}/healthz")


def test_no_tls_keys_means_plain_http() -> None:
    """Without the keys there is no context (and create_app sets none)."""
    assert server_context(ServerConfig()) is None


@pytest.mark.parametrize(
    ("fault", "key_named", "text"),
    [
        ("missing_cert", "server.tls_cert", "cannot read"),
        ("missing_key", "server.tls_key", "cannot read"),
        ("garbage_cert", "server.tls_cert", "is not a PEM certificate"),
        ("mismatched_key", "server.tls_key", "is not the PEM private key"),
        ("garbage_key", "server.tls_key", "is not the PEM private key"),
    ],
)
def test_bad_tls_files_are_config_errors_naming_the_key(
    tmp_path: Path, fault: str, key_named: str, text: str
) -> None:
    """Unreadable, non-PEM or mismatched files: a ConfigError at the right key."""
    ca = make_ca()
    cert, key = issue(ca, tmp_path, serial=7)
    if fault == "missing_cert":
        cert = tmp_path / "nope.pem"
    elif fault == "missing_key":
        key = tmp_path / "nope.pem"
    elif fault == "garbage_cert":
        cert.write_text("not a certificate\n")
    elif fault == "garbage_key":
        key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    else:
        other = tmp_path / "other"
        other.mkdir()
        key = issue(ca, other, serial=8)[1]
    with pytest.raises(ConfigError) as refused:
        server_context(ServerConfig(tls_cert=cert, tls_key=key))
    [(where, problem)] = refused.value.details
    assert where == key_named
    assert text in problem


def test_check_config_and_serve_exit_78_on_a_bad_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check-config` reads the TLS files too; a bad one is exit 78 naming the key."""
    config = tmp_path / "feed.toml"
    config.write_text(
        f'[server]\ntls_cert = "{tmp_path / "missing.pem"}"\ntls_key = "{tmp_path / "k.pem"}"\n'
        f'[database]\npath = "{tmp_path / "db.sqlite3"}"\n'
    )
    assert cli.main(["check-config", str(config)]) == 78
    assert "server.tls_cert: cannot read" in capsys.readouterr().err
    assert cli.main(["serve", "--config", str(config)]) == 78
    assert "server.tls_cert: cannot read" in capsys.readouterr().err


def test_app_keeps_the_context_for_reload(
    daemon_config: Callable[..., Config], tmp_path: Path
) -> None:
    """create_app builds the context once; reload_tls loads into that same object."""
    cert, key = issue(make_ca(), tmp_path, serial=5)
    config = sim_config(daemon_config, server={"tls_cert": str(cert), "tls_key": str(key)})
    app = create_app(config, fetch=False)
    assert isinstance(app[TLS], ssl.SSLContext)
    assert reload_tls(create_app(sim_config(daemon_config), fetch=False), config) is None


async def _serial_when_up(port: int, trust: ssl.SSLContext, timeout: float = 20.0) -> int:
    """The served certificate's serial once the daemon answers over TLS."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                return (await _served_serial(port, trust))[0]
            await asyncio.sleep(0.05)


async def test_socket_activated_daemon_serves_tls_and_sighup_renews_it(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """The real daemon on a socket systemd passed (fd 3) serves HTTPS with the configured
    pair; after the files are renewed, SIGHUP makes new connections get the new one."""
    ca = make_ca()
    cert, key = issue(ca, tmp_path, serial=2001)
    raw = config_dict(
        tmp_path, fx, unused_port(), server={"tls_cert": str(cert), "tls_key": str(key)}
    )
    config = write_config(tmp_path / "c.toml", raw)
    trust = client_context(ca[1])
    async with _socket_activated(config, tmp_path, 128) as (listener, daemon):
        port = listener.getsockname()[1]
        listener.close()  # only the daemon holds it now
        assert await _serial_when_up(port, trust) == 2001
        issue(ca, tmp_path, serial=2002)
        daemon.signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while await _serial_when_up(port, trust) != 2002:
                await asyncio.sleep(0.05)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    events = [e["event"] for e in daemon.events()]
    assert "TLS certificate reloaded" in events
