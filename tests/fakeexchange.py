"""A local aiohttp server that plays every exchange, serving real recorded bodies.

Each exchange lives under its own path prefix (``/kraken/...``), so one server can stand
in for all of them: point ``exchanges.<name>.base_url`` at ``url(name)``. Tests script
each exchange's answer (status, body, headers, delay) and count the requests it got.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

RECORDED = Path(__file__).parent / "fixtures" / "recorded"
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass
class Answer:
    """What one exchange says next."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def recorded_case(exchange: str, case: int = 0) -> dict[str, Any]:
    """One recorded case (url, body, price_path, price_value)."""
    data = json.loads((RECORDED / f"{exchange}.json").read_text())
    return dict(data["cases"][case])


def with_price(exchange: str, price: str | Decimal, case: int = 0) -> Any:
    """The recorded body of ``exchange`` with the price at its recorded path replaced."""
    rec = recorded_case(exchange, case)
    body = copy.deepcopy(rec["body"])
    steps = [int(i) if i else name for name, i in _STEP.findall(rec["price_path"])]
    node = body
    for step in steps[:-1]:
        node = node[step]
    old = node[steps[-1]]
    node[steps[-1]] = str(price) if isinstance(old, str) else float(price)
    return body


class FakeExchanges:
    """The server's state: scripted answers and request counts per exchange."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Answer]] = {}
        self.requests: Counter[str] = Counter()
        self.paths: dict[str, str] = {}
        self.base = ""

    def url(self, exchange: str) -> str:
        """The base URL to configure for ``exchange``."""
        return f"{self.base}/{exchange}"

    def answer(self, exchange: str, **kwargs: Any) -> None:
        """Script the next answers of ``exchange`` (until changed)."""
        self.answers[exchange] = [Answer(**kwargs)]

    def script(self, exchange: str, *answers: Answer) -> None:
        """Answer with each of ``answers`` in turn, then keep repeating the last."""
        self.answers[exchange] = list(answers)

    def price(self, exchange: str, price: str | Decimal) -> None:
        """Serve the recorded body of ``exchange`` with a given price."""
        self.answer(exchange, body=with_price(exchange, price))

    def app(self) -> web.Application:
        """The aiohttp application to serve."""
        app = web.Application()
        app.router.add_get("/{exchange}/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        exchange = request.match_info["exchange"]
        self.requests[exchange] += 1
        self.paths[exchange] = request.path_qs
        queue = self.answers.get(exchange)
        if not queue:
            return web.Response(status=404, text="not scripted")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.raw is not None:
            headers = {"Content-Type": "text/html", **answer.headers}
            return web.Response(status=answer.status, body=answer.raw, headers=headers)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)
