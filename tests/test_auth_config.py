"""The [auth] section's faults, the `bittrade-feed keys` command and the open-listener warning."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bittrade_feed import cli
from bittrade_feed.auth.keys import load_key_file
from bittrade_feed.config import parse_config
from bittrade_feed.errors import ConfigError
from tests.authutil import RSA_KEY, make_key, public_pem, write_keys


def auth_faults(auth: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"auth": auth})
    return dict(info.value.details)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "hs.secret"
    secret.write_bytes(b"k" * 32)
    short = tmp_path / "short.secret"
    short.write_bytes(b"k" * 8)
    pem = tmp_path / "rs.pem"
    pem.write_bytes(public_pem(RSA_KEY))
    return {"secret": str(secret), "short": str(short), "pem": str(pem)}


def issuer(**fields: Any) -> dict[str, Any]:
    return {"issuer": "https://id.test/", "audience": "feed", **fields}


def test_jwt_issuer_faults_name_their_key(files: dict[str, str]) -> None:
    got = auth_faults(
        {
            "jwt": [
                issuer(algorithms=["HS256", "RS256"], secret_file=files["secret"]),
                issuer(algorithms=["none"], public_key_file=files["pem"]),
                issuer(algorithms=["RS256"]),
                issuer(algorithms=["RS256"], secret_file=files["secret"]),
                issuer(algorithms=["HS256"], public_key_file=files["pem"]),
                issuer(algorithms=["HS256"], secret_file=files["short"]),
                issuer(algorithms=["RS256"], public_key_file=files["secret"]),
                {"algorithms": ["RS256"], "jwks_url": "ftp://x", "colour": 1},
            ]
        }
    )
    assert "mixes HS* with RS*" in got["auth.jwt[0].algorithms"]
    assert "never accepted" in got["auth.jwt[1].algorithms[0]"]
    assert "exactly one of" in got["auth.jwt[2].secret_file"]
    assert "HS* only" in got["auth.jwt[3].secret_file"]
    assert "need secret_file" in got["auth.jwt[4].algorithms"]
    assert "at least 32" in got["auth.jwt[5].secret_file"]
    assert "not a PEM public key" in got["auth.jwt[6].public_key_file"]
    assert "must be set" in got["auth.jwt[7].issuer"]
    assert "must be set" in got["auth.jwt[7].audience"]
    assert "not an http:// or https:// URL" in got["auth.jwt[7].jwks_url"]
    assert "unknown key" in got["auth.jwt[7].colour"]


def test_enabled_needs_a_way_in_and_files_must_be_good(files: dict[str, str]) -> None:
    assert "nothing could ever authenticate" in auth_faults({"enabled": True})["auth.enabled"]
    got = auth_faults({"session_secret_file": files["short"], "public": ["api/price", "/a*b"]})
    assert "at least 32" in got["auth.session_secret_file"]
    assert "must be a path" in got["auth.public[0]"]
    assert "must be a path" in got["auth.public[1]"]
    config = parse_config(
        {
            "auth": {
                "enabled": True,
                "jwt": [issuer(algorithms=["RS256"], public_key_file=files["pem"])],
            }
        }
    )
    assert config.auth.jwt[0].algorithms == ("RS256",)


def test_bad_key_file_is_a_config_fault_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[key]]\nid = "abcd"\nsha256 = "00"\n')
    got = auth_faults({"key_file": str(path)})
    assert "key[0].sha256" in got["auth.key_file"]


def test_check_config_exits_78_on_an_auth_fault(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[auth]\nenabled = true\nkey_file = "/nonexistent/keys.toml"\n')
    assert cli.main(["check-config", str(config)]) == 78
    assert "auth.key_file: /nonexistent/keys.toml: key file not found" in capsys.readouterr().err


def test_keys_cli_add_list_revoke(tmp_path: Path, capsys: Any) -> None:
    """add prints the key once (stdout) and stores its hash (0600); list and revoke."""
    path = tmp_path / "keys.toml"
    args = ["keys", "add", "--key-file", str(path), "--pairs", "btc-usd", "ETH-*", "--history",
            "--expires", "30d", "--note", "grafana"]  # fmt: skip
    assert cli.main(args) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("btk_") and key.count("_") >= 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.split("_", 2)[2] not in path.read_text()
    store = load_key_file(path)
    principal = store.verify(key, time.time())
    assert principal.pairs == ("BTC-USD", "ETH-*") and principal.history
    assert principal.expires is not None and principal.expires > time.time() + 29 * 86400
    assert cli.main(["keys", "add", "--key-file", str(path)]) == 0
    assert "can open no stream" in capsys.readouterr().err
    assert cli.main(["keys", "list", "--key-file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert principal.subject in listing and "active" in listing and "# grafana" in listing
    assert cli.main(["keys", "revoke", "--key-file", str(path), principal.subject]) == 0
    assert load_key_file(path).records[principal.subject].revoked
    assert cli.main(["keys", "revoke", "--key-file", str(path), "nosuchkey"]) == 1
    assert cli.main(["keys", "list", "--key-file", str(path)]) == 0
    assert "revoked" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pairs", "B?C"], "not a pair pattern"),
        (["--expires", "yesterday"], "give an RFC 3339 time"),
        (["--expires", "2001-01-01T00:00:00Z"], "is in the past"),
    ],
)
def test_keys_cli_refuses_bad_input(
    tmp_path: Path, capsys: Any, argv: list[str], message: str
) -> None:
    path = tmp_path / "keys.toml"
    assert cli.main(["keys", "add", "--key-file", str(path), *argv]) == 1
    assert message in capsys.readouterr().err
    assert not path.exists()


def test_keys_cli_on_a_broken_file_exits_78(tmp_path: Path, capsys: Any) -> None:
    _, record = make_key()
    path = write_keys(tmp_path / "keys.toml", record)
    path.write_text(path.read_text() + "\nbogus = 1\n")
    assert cli.main(["keys", "list", "--key-file", str(path)]) == 78
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "auth", "warned"),
    [("0.0.0.0", False, True), ("::", False, True), ("feed.example", False, True),
     ("127.0.0.1", False, False), ("::1", False, False), ("0.0.0.0", True, False)],
)  # fmt: skip
def test_open_listener_warning(tmp_path: Path, host: str, auth: bool, warned: bool) -> None:
    _, record = make_key()
    keys = write_keys(tmp_path / "keys.toml", record)
    config = parse_config(
        {"server": {"host": host}, "auth": {"enabled": auth, "key_file": str(keys)}}
    )
    with capture_logs() as logs:
        cli._warn_if_open(config)
    assert [e["log_level"] for e in logs] == (["warning"] if warned else [])
    if warned:
        assert "AUTHENTICATION IS OFF" in logs[0]["event"]
