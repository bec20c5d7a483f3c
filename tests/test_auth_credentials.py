"""Credentials on their own: scopes, API keys, the key file, sessions, tickets, JWTs."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.pytest_plugin import AiohttpServer
from hypothesis import given
from hypothesis import strategies as st

from bittrade_feed.auth.keys import KeyStore, hash_secret, load_key_file, revoked
from bittrade_feed.auth.principal import AuthFailure, Principal
from bittrade_feed.auth.scopes import Scopes, check_pattern, grant, matches, parse_scopes
from bittrade_feed.auth.sessions import SessionSigner
from bittrade_feed.auth.settings import JwtIssuerConfig
from bittrade_feed.auth.tickets import TicketBook
from bittrade_feed.auth.tokens import NeedKeys, TokenVerifier
from bittrade_feed.errors import ConfigError
from tests.authutil import (
    AUDIENCE,
    EC_KEY,
    HS_SECRET,
    ISSUER,
    OTHER_RSA_KEY,
    RSA_KEY,
    JwksServer,
    jwk_of,
    make_key,
    public_pem,
    token,
    write_keys,
)

NOW = 1_763_900_000.0
PART = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=5)
PAIR = st.builds(lambda b, q: f"{b}-{q}", PART, PART)
PATTERN = st.one_of(
    st.just("*"),
    PAIR,
    PART.map(lambda b: f"{b}-*"),
    PART.map(lambda q: f"*-{q}"),
)


# -- scopes ------------------------------------------------------------------------------


@given(st.lists(PAIR, max_size=8, unique=True), st.lists(PATTERN, max_size=5))
def test_grant_never_grants_an_unmatched_pair(requested: list[str], patterns: list[str]) -> None:
    """Granted and refused split the request exactly; a granted pair always has a pattern."""
    granted, refused = grant(requested, patterns)
    assert sorted(granted + refused) == sorted(requested)
    for pair in granted:
        assert any(matches(p, pair) for p in patterns)
    for pair in refused:
        assert not any(matches(p, pair) for p in patterns)


@given(PAIR, PATTERN)
def test_a_pattern_matches_only_what_it_reads_as(pair: str, pattern: str) -> None:
    """``BTC-*`` is the base, ``*-USD`` the quote, ``*`` everything, else the exact pair."""
    base, quote = pair.split("-")
    expected = (
        pattern == "*" or pattern == pair or pattern == f"{base}-*" or pattern == f"*-{quote}"
    )
    assert matches(pattern, pair) == expected


@given(st.lists(PATTERN, max_size=4, unique=True), st.booleans(), st.booleans())
def test_scope_words_round_trip(pairs: list[str], history: bool, alerts: bool) -> None:
    """The text form parses back to the same scopes."""
    scopes = Scopes(tuple(pairs), history, alerts)
    assert parse_scopes(scopes.words()) == scopes


@pytest.mark.parametrize("bad", ["BTC?USD", "B*C-USD", "**", "BTC", "btc-usd-x", "[A]-USD", ""])
def test_bad_pattern_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a pair pattern"):
        check_pattern(bad)


def test_token_scopes_skip_unknown_words_but_keys_do_not() -> None:
    """An issuer's extra words grant nothing; a key file with a typo is a named fault."""
    lenient = parse_scopes("openid pairs:BTC-USD pairs:B?C-USD histroy history", strict=False)
    assert lenient == Scopes(("BTC-USD",), True, False)
    with pytest.raises(ValueError, match="unknown scope 'histroy'"):
        parse_scopes("pairs:BTC-USD histroy")


# -- API keys and the key file ------------------------------------------------------------


def test_key_verifies_and_bad_ones_are_refused_by_reason() -> None:
    key, record = make_key("pairs:BTC-USD history")
    _, expired = make_key(expires=NOW - 1)
    _, gone = make_key()
    store = KeyStore([record, expired, revoked(gone)])
    principal = store.verify(key, NOW)
    assert principal == Principal(
        "key", record.id, f"key:{record.id}", ("BTC-USD",), True, False, None
    )
    secret = key.split("_", 2)[2]
    cases = {
        "malformed": "Bearer-ish nonsense",
        "unknown_key": f"btk_aaaaaaaaaaaa_{secret}",
        "bad_secret": f"btk_{record.id}_{'x' * len(secret)}",
        "expired": f"btk_{expired.id}_{secret}",
        "revoked": f"btk_{gone.id}_{secret}",
    }
    for reason, presented in cases.items():
        if reason in ("expired", "revoked"):
            # The right secret for those rows: the refusal is for the row's state.
            row = store.records[(expired if reason == "expired" else gone).id]
            store.records[row.id] = replace(row, sha256=hash_secret(secret))
        with pytest.raises(AuthFailure) as info:
            store.verify(presented, NOW)
        assert info.value.reason == reason
        assert secret not in info.value.detail


@given(st.integers(min_value=0), st.characters(codec="ascii"))
def test_any_changed_key_is_refused(position: int, char: str) -> None:
    """A key with any one character changed never verifies."""
    key, record = make_key()
    i = position % len(key)
    changed = key[:i] + char + key[i + 1 :]
    if changed == key:
        return
    with pytest.raises(AuthFailure):
        KeyStore([record]).verify(changed, NOW)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_key_file_round_trip_mode_0600_and_no_secret(tmp_path: Path, suffix: str) -> None:
    key, record = make_key("pairs:ETH-* alerts", expires=NOW + 86400)
    path = write_keys(tmp_path / f"keys{suffix}", record)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.split("_", 2)[2] not in path.read_text()
    loaded = load_key_file(path)
    assert loaded.records == {record.id: record}
    assert loaded.verify(key, NOW).pairs == ("ETH-*",)


def test_key_file_faults_name_the_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(
        '[[key]]\nid = "abcd1234"\nsha256 = "nothex"\nscope = "pairs:*"\n'
        '[[key]]\nid = "X!"\nsha256 = "' + "0" * 64 + '"\nscope = "everything"\n'
        'expires = "soon"\nrevoked = "no"\ncolour = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        load_key_file(path)
    where = {w.split(": ", 1)[1] for w, _ in info.value.details}
    assert where == {
        "key[0].sha256",
        "key[1].id",
        "key[1].scope",
        "key[1].expires",
        "key[1].revoked",
        "key[1].colour",
    }


# -- sessions and tickets ----------------------------------------------------------------

SIGNER = SessionSigner(b"s" * 32)
ALICE = Principal("key", "abcd1234", "key:abcd1234", ("BTC-*",), False, False, None)


def test_session_round_trip_expiry_and_other_secret() -> None:
    value = SIGNER.sign(ALICE, NOW + 60)
    opened = SIGNER.open(value, NOW)
    assert opened.credential == ALICE.credential and opened.expires == NOW + 60
    with pytest.raises(AuthFailure, match="expired"):
        SIGNER.open(value, NOW + 60)
    with pytest.raises(AuthFailure, match="another secret"):
        SessionSigner(b"t" * 32).open(value, NOW)


@given(st.integers(min_value=0), st.characters())
def test_any_tampered_session_is_refused(position: int, char: str) -> None:
    """Change any one character of a session cookie and it is refused (with a reason)."""
    value = SIGNER.sign(ALICE, NOW + 60)
    i = position % len(value)
    changed = value[:i] + char + value[i + 1 :]
    if changed == value:
        return
    with pytest.raises(AuthFailure) as info:
        SIGNER.open(changed, NOW)
    assert info.value.reason == "bad_session"


def test_ticket_is_single_use_and_short_lived() -> None:
    book = TicketBook(ttl=30, limit=2)
    first = book.issue(ALICE, 100.0)
    assert first is not None
    assert book.redeem(first, 129.9) == ALICE
    with pytest.raises(AuthFailure, match="already used"):
        book.redeem(first, 130.0)
    late = book.issue(ALICE, 100.0)
    assert late is not None
    with pytest.raises(AuthFailure):
        book.redeem(late, 130.0)
    assert book.issue(ALICE, 100.0) is not None
    assert book.issue(ALICE, 100.0) is not None
    assert book.issue(ALICE, 100.0) is None  # the limit holds while none expired
    assert book.issue(ALICE, 131.0) is not None  # expired ones are pruned


# -- JWT ---------------------------------------------------------------------------------


def verifier(tmp_path: Path, **overrides: Any) -> TokenVerifier:
    secret = tmp_path / "hs.secret"
    secret.write_bytes(HS_SECRET)
    cfg: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": ("HS256",),
        "secret_file": secret,
    }
    cfg.update(overrides)
    return TokenVerifier([JwtIssuerConfig(**cfg)], 30.0, lambda: 0.0)


def rsa_verifier(tmp_path: Path) -> TokenVerifier:
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(public_pem(RSA_KEY))
    return verifier(tmp_path, algorithms=("RS256",), secret_file=None, public_key_file=pem)


def test_valid_tokens_give_their_principal(tmp_path: Path) -> None:
    hs = verifier(tmp_path).verify(token(), NOW)
    assert hs == Principal(
        "jwt", f"{ISSUER}|alice", f"jwt:{ISSUER}|alice", ("BTC-*",), True, False, NOW + 3630
    )  # expires: exp plus the leeway, when it stops being accepted
    rs = rsa_verifier(tmp_path).verify(token(RSA_KEY, "RS256", scope=["pairs:*", "alerts"]), NOW)
    assert (rs.pairs, rs.alerts, rs.history) == (("*",), True, False)


def _refused(verify: TokenVerifier, presented: str, reason: str) -> None:
    with pytest.raises(AuthFailure) as info:
        verify.verify(presented, NOW)
    assert info.value.reason == reason, info.value.detail
    assert presented not in info.value.detail


def test_rejected_tokens(tmp_path: Path) -> None:
    """Expired, not yet valid, wrong aud/iss, missing claims, alg none, tampered, other key."""
    hs = verifier(tmp_path)
    _refused(hs, token(exp=NOW - 31), "expired")
    assert hs.verify(token(exp=NOW - 29), NOW)  # within the leeway
    _refused(hs, token(nbf=NOW + 31), "not_yet_valid")
    assert hs.verify(token(nbf=NOW + 29), NOW)
    _refused(hs, token(aud="someone-else"), "bad_token")
    _refused(hs, token(iss="https://evil.test/"), "unknown_issuer")
    _refused(hs, token(exp=None), "bad_token")
    _refused(hs, token(aud=None), "bad_token")
    _refused(hs, token(exp="tomorrow"), "bad_token")
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60}, None, "none")
    _refused(hs, unsigned, "bad_token")
    head, body, sig = token().split(".")
    forged_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    _refused(hs, f"{head}.{body}.{forged_sig}", "bad_token")
    other_body = jwt.utils.base64url_encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60, "scope": "pairs:*"}).encode()
    ).decode()
    _refused(hs, f"{head}.{other_body}.{sig}", "bad_token")
    _refused(hs, token(key=b"another-secret-of-32-bytes-or-more!!"), "bad_token")
    _refused(hs, "not.a.jwt", "malformed")


def test_hs_rs_key_confusion_is_refused(tmp_path: Path) -> None:
    """An HS256 token whose secret is the issuer's RSA public key does not pass as RS256."""
    rs = rsa_verifier(tmp_path)
    pem = public_pem(RSA_KEY)
    # PyJWT refuses to sign with a PEM as HMAC secret; build the token by hand.
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    head = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60, "scope": "pairs:*"}).encode()
    )
    signing = head + b"." + body
    sig = jwt.utils.base64url_encode(hmac.new(pem, signing, hashlib.sha256).digest())
    _refused(rs, (signing + b"." + sig).decode(), "bad_token")
    _refused(rs, token(EC_KEY, "ES256"), "bad_token")  # an algorithm not pinned
    _refused(rs, token(OTHER_RSA_KEY, "RS256"), "bad_token")  # right alg, wrong key


@given(st.integers(min_value=0), st.characters(codec="ascii"))
def test_any_tampered_token_is_refused(position: int, char: str) -> None:
    """Change any one character of a signed token and it never verifies."""
    good = token()
    i = position % len(good)
    changed = good[:i] + char + good[i + 1 :]
    if changed == good:
        return
    hs = TokenVerifier([JwtIssuerConfig(ISSUER, AUDIENCE, ("HS256",))], 30.0, lambda: 0.0)
    issuer = hs.issuers[ISSUER]
    issuer.static, issuer.jwks = HS_SECRET, None  # as if read from a secret_file
    assert hs.verify(good, NOW).kind == "jwt"
    try:
        principal = hs.verify(changed, NOW)
    except AuthFailure:
        return
    # base64url's last character carries spare bits: a change there may decode the same.
    assert jwt.utils.base64url_decode(changed.split(".")[2]) == jwt.utils.base64url_decode(
        good.split(".")[2]
    )
    assert principal == hs.verify(good, NOW)


async def test_jwks_fetched_cached_and_unknown_kid_refetch_rate_limited(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """Keys come from the JWKS URL (aiohttp), are cached, and an unknown kid refetches at
    most every jwks_min_refetch seconds; a rotated key is picked up after that."""
    jwks = JwksServer()
    jwks.keys = [jwk_of(RSA_KEY, "k1")]
    server = await aiohttp_server(jwks.app())
    now = [0.0]
    cfg = JwtIssuerConfig(
        ISSUER,
        AUDIENCE,
        ("RS256",),
        jwks_url=str(server.make_url("/jwks.json")),
        jwks_min_refetch=30.0,
    )
    tv = TokenVerifier([cfg], 30.0, lambda: now[0])
    good = token(RSA_KEY, "RS256", headers={"kid": "k1"})
    async with aiohttp.ClientSession() as session:

        async def verify(presented: str) -> Principal:
            try:
                return tv.verify(presented, NOW)
            except NeedKeys as need:
                await need.jwks.refresh(session)
            return tv.verify(presented, NOW)

        assert (await verify(good)).subject == f"{ISSUER}|alice"
        assert (await verify(good)).subject == f"{ISSUER}|alice"
        assert jwks.fetches == 1
        rotated = token(OTHER_RSA_KEY, "RS256", headers={"kid": "k2"})
        for _ in range(5):
            with pytest.raises(AuthFailure) as info:
                await verify(rotated)
            assert info.value.reason == "unknown_kid"
        assert jwks.fetches == 1  # the first try was within 30 s of the fetch
        jwks.keys.append(jwk_of(OTHER_RSA_KEY, "k2"))
        now[0] = 31.0
        assert (await verify(rotated)).subject == f"{ISSUER}|alice"
        assert jwks.fetches == 2
        with pytest.raises(AuthFailure):
            await verify(token(RSA_KEY, "RS256"))  # no kid header at all
        jwks.status = 500
        now[0] = 400.0  # past the TTL: the refetch fails, the cached keys still serve
        assert (await verify(good)).kind == "jwt"
        assert jwks.fetches == 3


def test_rewriting_the_key_file_keeps_its_owner(tmp_path: Path) -> None:
    """Root running `keys` on the service user's file leaves it the service user's."""
    import os  # noqa: PLC0415

    _, first = make_key()
    _, second = make_key()
    path = write_keys(tmp_path / "keys.toml", first)
    root = os.geteuid() == 0
    if root:
        os.chown(path, 12345, 12346)
    write_keys(path, first, second)
    st = path.stat()
    assert (st.st_uid, st.st_gid) == ((12345, 12346) if root else (os.getuid(), os.getgid()))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert set(load_key_file(path).records) == {first.id, second.id}
