"""The event-stream parser against the WHATWG rules, fed in every chunk split."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from bittrade_feed_client.sse import Event, EventStreamParser


class Case(NamedTuple):
    """A stream and what parsing it must produce."""

    stream: bytes
    events: list[tuple[str, str, str]]
    """(type, data, last_event_id) of each dispatched event."""
    last_event_id: str = ""
    retry: int | None = None


DAEMON_PRICE = (
    b'{"id":1842,"pair":"BTC-USD","price":"64123.45",'
    b'"ts":"2026-11-23T20:31:00.123Z","sources":["bitstamp","kraken"]}'
)
DAEMON_STATUS = b'{"state":"stale","pair":"BTC-USD","since":"2026-11-23T20:33:00.000Z"}'

CASES = {
    # The examples of HTML Living Standard section 9.2.6 / 9.2.7, verbatim.
    "spec: three messages": Case(
        b"data: This is the first message.\n\n"
        b"data: This is the second message, it\ndata: has two lines.\n\n"
        b"data: This is the third message.\n\n",
        [
            ("message", "This is the first message.", ""),
            ("message", "This is the second message, it\nhas two lines.", ""),
            ("message", "This is the third message.", ""),
        ],
    ),
    "spec: event types": Case(
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        [("add", "73857293", ""), ("remove", "2153", ""), ("add", "113411", "")],
    ),
    "spec: stock ticker": Case(
        b"data: YHOO\ndata: +2\ndata: 10\n\n", [("message", "YHOO\n+2\n10", "")]
    ),
    "spec: ids": Case(
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n",
        [
            ("message", "first event", "1"),
            ("message", "second event", ""),
            ("message", " third event", ""),
        ],
    ),
    "spec: ids, last event cut off at EOF": Case(
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n",
        [("message", "first event", "1"), ("message", "second event", "")],
    ),
    "spec: empty data": Case(
        b"data\n\ndata\ndata\n\ndata:", [("message", "", ""), ("message", "\n", "")]
    ),
    "spec: optional space": Case(
        b"data:test\n\ndata: test\n\n", [("message", "test", ""), ("message", "test", "")]
    ),
    # Line ends.
    "CRLF": Case(b"event: price\r\ndata: a\r\nid: 7\r\n\r\n", [("price", "a", "7")], "7"),
    "CR only": Case(b"data: a\rdata: b\r\r", [("message", "a\nb", "")]),
    "mixed line ends": Case(b"data: a\r\ndata: b\rdata: c\n\r\n", [("message", "a\nb\nc", "")]),
    "CRLF then CR": Case(
        b"data: a\r\n\r\ndata: b\r\r", [("message", "a", ""), ("message", "b", "")]
    ),
    "LF CR is two line ends": Case(
        b"data: a\n\rdata: b\n\n", [("message", "a", ""), ("message", "b", "")]
    ),
    "CR CR LF is two line ends": Case(b"data: a\r\r\n", [("message", "a", "")]),
    # Comments and fields.
    "comments only": Case(b": keep-alive\n\n:\n\n:data: x\n\n", []),
    "one leading space stripped": Case(
        b"data:  two\n\ndata:none\n\n", [("message", " two", ""), ("message", "none", "")]
    ),
    "colons in the value": Case(b"data: a:b: c\n\n", [("message", "a:b: c", "")]),
    "field without colon": Case(b"event\ndata\n\n", [("message", "", "")]),
    "unknown and wrong-case fields": Case(
        b"foo: bar\nDATA: y\ndata: x\n\n", [("message", "x", "")]
    ),
    "event type resets after dispatch": Case(
        b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n",
        [("a", "1", ""), ("message", "2", ""), ("message", "3", "")],
    ),
    "NUL inside data is kept": Case(b"data: a\x00b\n\n", [("message", "a\x00b", "")]),
    # retry.
    "retry digits": Case(b"retry: 1500\n\n", [], retry=1500),
    "retry not digits": Case(
        b"retry: 15s\n\nretry: +5\n\nretry:  10\n\nretry: -1\n\nretry:\n\n"
        b"retry: \xd9\xa3\n\nretry: 1_0\n\n",
        [],
    ),
    "retry last valid wins": Case(b"retry: 100\n\nretry: x\n\nretry: 200\n\n", [], retry=200),
    # id.
    "id persists across events": Case(
        b"id: 3\ndata: a\n\ndata: b\n\nevent: status\ndata: c\n\n",
        [("message", "a", "3"), ("message", "b", "3"), ("status", "c", "3")],
        "3",
    ),
    "empty id resets": Case(
        b"id: 3\ndata: a\n\nid:\ndata: b\n\n", [("message", "a", "3"), ("message", "b", "")]
    ),
    "id with NUL ignored": Case(
        b"id: 5\ndata: a\n\nid: 6\x007\ndata: b\n\n",
        [("message", "a", "5"), ("message", "b", "5")],
        "5",
    ),
    "id without data still sets the last id": Case(b"id: 9\n\n", [], "9"),
    "id of an unfinished event is not the last id": Case(
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n", [("message", "a", "1")], "1"
    ),
    # Encoding.
    "leading BOM dropped": Case(b"\xef\xbb\xbfdata: a\n\n", [("message", "a", "")]),
    "only one BOM dropped": Case(
        b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n", [("message", "b", "")]
    ),
    "multi-byte characters": Case("data: €✓ 𝄞\n\n".encode(), [("message", "€✓ 𝄞", "")]),
    "invalid UTF-8 replaced": Case(b"data: \xff\xfe!\n\n", [("message", "\ufffd\ufffd!", "")]),
    # What the daemon sends.
    "daemon opening": Case(
        b"retry: 3000\n\nid: 1842\nevent: price\ndata: " + DAEMON_PRICE + b"\n\n"
        b"event: status\ndata: " + DAEMON_STATUS + b"\n\n: keep-alive\n\n",
        [
            ("price", DAEMON_PRICE.decode(), "1842"),
            ("status", DAEMON_STATUS.decode(), "1842"),
        ],
        "1842",
        3000,
    ),
    # Issue 11: the daemon may send retry: in the same block as the first event.
    "retry in the first event's block": Case(
        b"retry: 3000\nid: 1842\nevent: price\ndata: " + DAEMON_PRICE + b"\n\n",
        [("price", DAEMON_PRICE.decode(), "1842")],
        "1842",
        3000,
    ),
}


def splits(stream: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, every cut into two, and a few seeded cuts into many."""
    yield [stream]
    yield [stream[i : i + 1] for i in range(len(stream))]
    for cut in range(1, len(stream)):
        yield [stream[:cut], stream[cut:]]
    rng = random.Random(stream)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), min(5, len(stream) - 1)))
        yield [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_stream_parses_the_same_in_every_split(case: Case) -> None:
    """Each tricky stream gives the expected events however its bytes are chunked."""
    expected = [Event(*e) for e in case.events]
    for chunks in splits(case.stream):
        parser = EventStreamParser()
        events = [event for chunk in chunks for event in parser.feed(chunk)]
        assert events == expected, chunks
        assert (parser.last_event_id, parser.retry) == (case.last_event_id, case.retry), chunks


def test_an_event_ended_by_cr_is_dispatched_without_waiting_for_more_bytes() -> None:
    """A trailing CR ends the line at once; an LF in the next chunk is not a second end."""
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r\r") == [Event(data="a")]
    assert parser.feed(b"\ndata: b\n\n") == [Event(data="b")]


def test_reset_drops_the_unfinished_event_but_keeps_id_and_retry() -> None:
    """A new connection starts clean, resuming from the last dispatched id."""
    parser = EventStreamParser()
    parser.feed(b"retry: 250\n\nid: 4\ndata: a\n\nid: 5\ndata: half")
    parser.reset()
    events = parser.feed(b"\xef\xbb\xbf: hello\n\ndata: b\n\n")
    assert events == [Event(data="b", last_event_id="4")]
    assert (parser.last_event_id, parser.retry) == ("4", 250)


def test_a_resumed_parser_starts_from_the_given_id() -> None:
    """Id-less events after a resume keep the resume point (as browsers do)."""
    parser = EventStreamParser("17")
    assert parser.feed(b"event: status\ndata: {}\n\n") == [Event("status", "{}", "17")]
    assert parser.last_event_id == "17"
