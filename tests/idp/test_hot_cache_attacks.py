"""Attacks on the hot cache of lean answers (tongban.hotcache, idp.fast.userinfo): a cached answer
must never be given for another token, a forged or expired one, a narrower scope; and an
attacker must not be able to empty every process's cache at will."""

from __future__ import annotations

import time

import pytest

from tests.flask_flows import authorize_code, csrf_token, exchange, login
from tests.tongban.test_hot_cache import _cached, hc  # noqa: F401  (fixture)


def _access(client, cid, secret, scope) -> str:
    return exchange(client, cid, secret, authorize_code(client, cid, scope=scope)).get_json()["access_token"]


def test_a_cached_answer_is_only_for_its_exact_token(app, client, hc, citizen, make_client):  # noqa: F811
    cid, secret = make_client()
    login(client)
    wide = _access(client, cid, secret, "openid profile phone")
    narrow = _access(client, cid, secret, "openid profile")  # same person, same session, same system
    assert "phone_number" in _cached(client, "/oauth/userinfo", {"Authorization": f"Bearer {wide}"})
    info = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {narrow}"})
    assert info.status_code == 200 and "phone_number" not in info.get_json()
    # the cached token's text with its signature altered, or with a byte of its claims changed
    head, payload, sig = wide.split(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    for forged in (f"{head}.{payload}.{flipped}", f"{head}.{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{sig}"):
        resp = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {forged}"})
        assert resp.status_code == 401


def test_a_token_expiring_while_cached_is_refused(app, client, hc, citizen, make_client, monkeypatch):  # noqa: F811
    import idp.tokens

    cid, secret = make_client()
    login(client)
    tok = _access(client, cid, secret, "openid profile")
    _cached(client, "/oauth/userinfo", {"Authorization": f"Bearer {tok}"})
    later = time.time() + app.config["TONGBAN_ACCESS_TOKEN_LIFETIME"] + 5
    monkeypatch.setattr(idp.tokens.time, "time", lambda: later)
    hits = hc.hits
    assert client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {tok}"}).status_code == 401
    assert hc.hits == hits


def test_wrong_passwords_do_not_empty_the_cache(app, client, hc, citizen, make_client):  # noqa: F811
    """The lockout's counters are written with Core statements on ``users``: without their
    declaration each wrong password (anyone can send them) would empty every process's cache."""
    from tests.conftest import CITIZEN_ID

    cid, secret = make_client()
    login(client)
    tok = _access(client, cid, secret, "openid profile")
    bearer = {"Authorization": f"Bearer {tok}"}
    _cached(client, "/oauth/userinfo", bearer)
    attacker = app.test_client()
    for _ in range(3):
        resp = attacker.post("/login", data={"csrf_token": csrf_token(attacker, "/login"), "login": CITIZEN_ID,
                                             "password": "wrong-Passw0rd!"})
        assert resp.status_code in (200, 400, 401, 429)
    cleared, hits = hc.cleared, hc.hits
    assert client.get("/oauth/userinfo", headers=bearer).status_code == 200
    assert hc.hits == hits + 1 and hc.cleared == cleared


@pytest.mark.parametrize("size", [1, 2])
def test_many_tokens_cannot_grow_the_cache_past_its_bound(app, client, hc, citizen, make_client, size):  # noqa: F811
    app.config["TONGBAN_HOT_CACHE_SIZE"] = size
    cid, secret = make_client()
    login(client)
    for _ in range(4):
        tok = _access(client, cid, secret, "openid profile")
        for _ in range(3):
            assert client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
        assert len(hc) <= size
