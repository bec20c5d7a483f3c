"""An incremental ``text/event-stream`` parser that follows the WHATWG rules.

HTML Living Standard §9.2.5 (parsing) and §9.2.6 (interpreting): UTF-8 with one leading
BOM dropped; lines end in CRLF, LF or CR; a blank line dispatches; ``:`` starts a
comment; ``data`` lines are joined with LF; ``retry`` counts only if all ASCII digits;
``id`` persists across events, an empty one resets it and one containing NUL is
ignored; whatever is pending when a connection ends is discarded.

Bytes go in as they arrive (any split), events come out; the parser does no I/O.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event."""

    type: str = "message"
    data: str = ""
    last_event_id: str = ""
    """The stream's last event id when this event was dispatched."""


class EventStreamParser:
    """Turns chunks of one or more successive connections into events.

    ``last_event_id`` and ``retry`` belong to the subscription, not the connection, so
    they survive ``reset()``; that is what a reconnect sends back as ``Last-Event-ID``.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        """The reconnection time in milliseconds, once the server has set one."""
        self.reset()

    def reset(self) -> None:
        """Start a new connection: anything pending from the old one is dropped."""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._skip_lf = False
        self._line = ""
        self._data: list[str] = []
        self._type = ""
        # The spec starts each stream's id buffer empty, which would let the first id-less
        # event after a reconnect wipe the resume point; browsers seed it with the last
        # id instead, and so do we.
        self._id = self.last_event_id

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse the next bytes; return the events they complete."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf:
            # The last chunk ended in CR: an LF starting this one belongs to that CR.
            self._skip_lf = False
            text = text.removeprefix("\n")
        events: list[Event] = []
        start = 0
        for end in _LINE_END.finditer(text):
            self._process(self._line + text[start : end.start()], events)
            self._line = ""
            start = end.end()
        self._line += text[start:]
        # A CR ends its line at once (no waiting for a possible LF), so an event
        # terminated by CR is dispatched without waiting for the next chunk.
        self._skip_lf = text.endswith("\r")
        return events

    def _process(self, line: str, events: list[Event]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self, events: list[Event]) -> None:
        self.last_event_id = self._id
        if self._data:
            events.append(Event(self._type or "message", "\n".join(self._data), self._id))
        self._data = []
        self._type = ""
