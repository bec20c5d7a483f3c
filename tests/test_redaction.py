"""No URL secret (``user:password@``) from a config reaches stderr, ``STATUS=`` or a log."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
import structlog
from aiohttp.test_utils import unused_port
from hypothesis import given
from hypothesis import strategies as st

from bittrade_feed.ops import logs
from tests.childdaemon import NotifySocket, config_dict, run_daemon, write_config
from tests.fakeexchange import FakeExchanges
from tests.test_reload import reload

SECRET = "s3cr3t-Pa55"
BAD_URLS = (
    f"http://alice:{SECRET}@[::1",  # invalid IPv6: urlsplit raises
    f"ftp://alice:{SECRET}@example.org",  # a valid URL of the wrong scheme
    f"https://{SECRET}@example.org:99999",  # a bare token, a port out of range
)


@pytest.mark.parametrize("bad_url", BAD_URLS)
@pytest.mark.parametrize("command", ["check-config", "serve"])
async def test_bad_url_with_a_secret_is_named_but_redacted(
    tmp_path: Path, fx: FakeExchanges, command: str, bad_url: str
) -> None:
    """check-config and serve exit 78 naming the key; stderr and STATUS never show the secret."""
    raw = config_dict(tmp_path, fx, unused_port())
    raw["exchanges"]["kraken"]["base_url"] = bad_url
    config = write_config(tmp_path / "c.toml", raw)
    env_notify = NotifySocket()
    async with env_notify as notify:
        env = {"NOTIFY_SOCKET": notify.address}
        async with run_daemon(config, tmp_path, env=env, command=command) as daemon:
            assert await daemon.wait() == 78
        status = await notify.expect("STATUS")
    err = daemon.log()
    assert "exchanges.kraken.base_url: " in err
    assert "***@" in err
    assert SECRET not in err
    assert "Traceback" not in err
    text = notify.notes[status].fields["STATUS"]
    assert text.startswith("invalid config: exchanges.kraken.base_url") and SECRET not in text


async def test_reload_with_a_secret_url_logs_and_reports_it_redacted(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """A refused reload names the key in the log and STATUS=, with the secret cut out."""
    port = unused_port()
    raw = config_dict(tmp_path, fx, port)
    config = write_config(tmp_path / "c.toml", raw)
    async with NotifySocket() as notify:
        env = {"NOTIFY_SOCKET": notify.address}
        async with run_daemon(config, tmp_path, port=port, env=env) as daemon:
            await notify.expect("READY=1", timeout=20)
            raw["exchanges"]["kraken"]["base_url"] = BAD_URLS[0]
            write_config(config, raw)
            status = await reload(daemon, notify)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert status.startswith("reload failed: exchanges.kraken.base_url")
    assert SECRET not in status
    (refused,) = [e for e in daemon.events() if e["event"].startswith("reload refused")]
    assert "exchanges.kraken.base_url" in refused["reason"]
    assert SECRET not in daemon.log()


def test_log_fields_are_redacted_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    """Nested fields, library records and exception messages lose their URL secrets."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("info", "json")
    try:
        log = structlog.get_logger("test")
        url = f"https://bob:{SECRET}@example.org/x"
        log.warning("nested", where={"a": [("x", url)], "b": {"c": {"d": url}}})
        logging.getLogger("aiohttp.client").warning("fetching %s", url)
        try:
            raise ValueError(f"cannot reach {url}")
        except ValueError:
            log.exception("failed")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["event"] for line in lines] == [
        "nested",
        "fetching https://***@example.org/x",
        "failed",
    ]
    assert lines[0]["where"]["b"]["c"]["d"] == "https://***@example.org/x"
    assert "ValueError" in json.dumps(lines[2]["exception"])
    assert SECRET not in err


def test_redact_text_is_the_one_rule() -> None:
    """Userinfo goes, with or without a password; the rest of the URL stays."""
    assert logs.redact_text("http://u:p@h:1/a?b=c@d") == "http://***@h:1/a?b=c@d"
    assert (
        logs.redact_text("see https://tok@h and http://h/x@y")
        == "see https://***@h and http://h/x@y"
    )
    assert logs.redact_text("no url: a@b") == "no url: a@b"


userinfo = st.text(
    st.characters(blacklist_characters="/?#@", blacklist_categories=("Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=20,
)


@given(
    before=st.text(max_size=30).filter(lambda t: "://" not in t),
    scheme=st.sampled_from(["http", "https", "redis", "x+y"]),
    user=userinfo,
    password=st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=20),
    host=st.sampled_from(["example.org", "[::1", "10.0.0.1:99999", ""]),
    nested=st.integers(0, 5),
)
def test_no_url_password_survives_redaction(
    before: str, scheme: str, user: str, password: str, host: str, nested: int
) -> None:
    """Whatever surrounds a URL and however deep it sits, its userinfo is gone."""
    text = f"{before}{scheme}://{user}:{password}@{host}/p"
    value: object = text
    for i in range(nested):
        value = {"k": [value, i]} if i % 2 else (value,)
    redacted = f"{before}{scheme}://***@{host}/p"
    assert logs.redact_text(text) == redacted
    assert json.dumps(logs.redact_value(value)) == json.dumps(value).replace(
        json.dumps(text)[1:-1], json.dumps(redacted)[1:-1]
    )
