"""Scopes: which pairs a credential may stream, and whether it may read history or alerts.

One text form serves API keys and JWTs alike, space-separated words as in OAuth's
``scope`` claim: ``pairs:BTC-USD pairs:ETH-* history alerts``. A pair pattern is an exact
pair, ``BASE-*``, ``*-QUOTE`` or ``*``; nothing else (no ``?`` or ``[...]``), so what a
pattern grants is obvious from reading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_PART = r"[A-Z0-9]{1,15}"
_PATTERN = re.compile(rf"\*|{_PART}-{_PART}|{_PART}-\*|\*-{_PART}")
PAIRS_PREFIX = "pairs:"
FLAGS = ("history", "alerts")


@dataclass(frozen=True, slots=True)
class Scopes:
    """What a credential grants."""

    pairs: tuple[str, ...] = ()
    history: bool = False
    alerts: bool = False

    def words(self) -> str:
        """The scope text that parses back to these scopes."""
        out = [PAIRS_PREFIX + p for p in self.pairs]
        out += [flag for flag in FLAGS if getattr(self, flag)]
        return " ".join(out)


def check_pattern(raw: str) -> str:
    """A pair pattern in its canonical (upper-case) form; ``ValueError`` saying why not."""
    pattern = raw.strip().upper()
    if _PATTERN.fullmatch(pattern) is None:
        raise ValueError(
            f"{raw!r} is not a pair pattern: write BTC-USD, BTC-*, *-USD or * "
            "(letters and digits, '*' only as a whole side)"
        )
    return pattern


def parse_scopes(text: str | Iterable[str], *, strict: bool = True) -> Scopes:
    """Scopes from space-separated words (or a list of words, as some issuers send).

    ``strict=False`` (tokens from an issuer) skips words it does not know: an unknown word
    grants nothing, so ignoring it can only narrow what the credential may do.
    """
    words = text.split() if isinstance(text, str) else [w for item in text for w in item.split()]
    pairs: list[str] = []
    flags = dict.fromkeys(FLAGS, False)
    for word in words:
        if word in flags:
            flags[word] = True
        elif word.startswith(PAIRS_PREFIX):
            try:
                pattern = check_pattern(word[len(PAIRS_PREFIX) :])
            except ValueError:
                if strict:
                    raise
                continue
            if pattern not in pairs:
                pairs.append(pattern)
        elif strict:
            raise ValueError(
                f"unknown scope {word!r}: use pairs:PATTERN, history or alerts, space-separated"
            )
    return Scopes(tuple(pairs), flags["history"], flags["alerts"])


def matches(pattern: str, pair: str) -> bool:
    """Whether one pattern grants one pair."""
    if pattern in ("*", pair):
        return True
    base, _, quote = pair.partition("-")
    p_base, _, p_quote = pattern.partition("-")
    return (p_quote == "*" and p_base == base) or (p_base == "*" and p_quote == quote)


def grant(
    requested: Iterable[str], patterns: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(granted, refused): the requested pairs some pattern matches, and the others."""
    allowed = tuple(patterns)
    granted: list[str] = []
    refused: list[str] = []
    for pair in requested:
        (granted if any(matches(p, pair) for p in allowed) else refused).append(pair)
    return tuple(granted), tuple(refused)
