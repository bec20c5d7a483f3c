"""Retry-After: delta-seconds or an HTTP date, capped at an hour, junk ignored safely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bittrade_feed.sources.base import parse_retry_after


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("\u00b2", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("3600", 3600.0),
        ("3601", 3600.0),
        ("99999999999999999999", 3600.0),
        ("9" * 5000, 3600.0),
        ("1e400", None),
        ("inf", None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),
        ("Mon, 99 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds up to the 1 h cap; junk and absence are None; a past date is 0."""
    assert parse_retry_after(header) == expected


def test_parse_retry_after_future_date() -> None:
    """An HTTP date in the future is the seconds until then."""
    when = datetime.now(UTC) + timedelta(seconds=90)
    seconds = parse_retry_after(format_datetime(when, usegmt=True))
    assert seconds is not None
    assert 85.0 < seconds <= 90.0
