"""Shared fixtures: recorded exchange bodies and a hand-driven clock."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.daemon import daemon_config, fx
from tests.fakeclock import FakeClock

FIXTURES = Path(__file__).parent / "fixtures"


def documented(exchange: str, case: str) -> Any:
    """The body of a vendor-documented example from tests/fixtures/documented/, decimals exact."""
    path = FIXTURES / "documented" / f"{exchange}.json"
    return json.loads(path.read_text(), parse_float=Decimal)["cases"][case]["body"]


def recorded(exchange: str, case: int = 0) -> Any:
    """The body of a real recorded response from tests/fixtures/recorded/."""
    data = json.loads((FIXTURES / "recorded" / f"{exchange}.json").read_text())
    return data["cases"][case]["body"]


@pytest.fixture(autouse=True)
def _isolated_structlog() -> Any:
    """Each test starts with the structlog config the previous one found.

    The daemon's own ``logs.configure`` (start-up, reload) sets a global level: a test
    that reloads at level "error" must not silence the info lines a later test captures.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


__all__ = ["clock", "daemon_config", "documented", "fx", "recorded"]
