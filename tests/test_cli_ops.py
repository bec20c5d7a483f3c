"""What the command line tells operators: journald priorities and the event-loop switch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bittrade_feed import cli
from bittrade_feed.errors import FeedError


def _serve_bad_config(tmp_path: Path, journal: bool) -> list[str]:
    """Run ``serve`` on an invalid file with stderr to a file; return its stderr lines."""
    config = tmp_path / "bad.toml"
    config.write_text("[feed]\ninterval = -1\n")
    err = tmp_path / "stderr.txt"
    with err.open("wb") as stderr:
        st = os.fstat(stderr.fileno())
        env = dict(os.environ)
        # journald passes the stream's device:inode; a stale value names another file.
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino if journal else st.st_ino + 1}"
        status = subprocess.run(
            [sys.executable, "-m", "bittrade_feed.cli", "serve", "--config", str(config)],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env=env,
            timeout=30,
            check=False,
        ).returncode
    assert status == 78
    return err.read_text().splitlines()


def test_config_errors_reach_the_journal_at_error_priority(tmp_path: Path) -> None:
    """Every line of a config error starts with ``<3>``, so ``journalctl -p warning`` shows it."""
    lines = _serve_bad_config(tmp_path, journal=True)
    assert any("feed.interval: -1 is out of range" in line for line in lines)
    assert lines
    assert all(line.startswith("<3>") for line in lines), lines


def test_no_priority_prefix_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    """An inherited ``$JOURNAL_STREAM`` naming another stream adds no ``<N>`` to a terminal."""
    lines = _serve_bad_config(tmp_path, journal=False)
    assert lines[0].startswith("bittrade-feed: invalid config")
    assert not any(line.startswith("<") for line in lines)


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def _run_with(monkeypatch: pytest.MonkeyPatch, value: str | None) -> str:
    if value is None:
        monkeypatch.delenv(cli.LOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.LOOP_ENV, value)
    coro = _loop_module()
    return str(cli._run(coro))  # type: ignore[arg-type]


def test_loop_env_asyncio_forces_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``BITTRADE_FEED_LOOP=asyncio`` runs on asyncio though uvloop (in the test venv) is there."""
    assert _run_with(monkeypatch, "asyncio").startswith("asyncio")
    assert _run_with(monkeypatch, None).startswith("uvloop")
    assert _run_with(monkeypatch, "uvloop").startswith("uvloop")


def test_loop_env_rejects_an_unknown_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt loop name is a named error, not a silent fallback."""
    with pytest.raises(FeedError, match="expected auto, asyncio or uvloop"):
        _run_with(monkeypatch, "uv-loop")
