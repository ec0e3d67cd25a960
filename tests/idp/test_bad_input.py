"""Bad input at the OAuth endpoints gets a 4xx OAuth error, never a 500, and changes nothing."""

from __future__ import annotations

import base64
from urllib.parse import quote, urlencode

import pytest

from tests.flask_flows import REDIRECT, basic, login


def _raw_basic(raw: bytes) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke",
                                  "/oauth/device_authorization"])
@pytest.mark.parametrize("raw", [b"\xff\xfe:secret", b"client:\xc3(", b"\x80"])
def test_non_utf8_basic_credentials(client, make_client, path, raw):
    make_client()
    resp = client.post(path, data={"grant_type": "client_credentials", "token": "x"}, headers=_raw_basic(raw))
    assert resp.status_code in (400, 401), resp.get_data(as_text=True)
    assert resp.get_json()["error"] in ("invalid_client", "invalid_request")


@pytest.mark.parametrize("field,value", [
    ("redirect_uri", REDIRECT + "\\x"), ("redirect_uri", REDIRECT + '"'), ("redirect_uri", REDIRECT + "é"),
    ("redirect_uri", 'http://127.0.0.1:9/cb"ack'), ("redirect_uri", "http://[::1"), ("redirect_uri", "http://a b/"),
    ("response_type", 'code"'), ("response_type", "codé"), ("response_type", "code\\"),
    ("redirect_uri", REDIRECT + "\n"), ("redirect_uri", REDIRECT + "\x00"),
])
@pytest.mark.parametrize("logged_in", [False, True])
def test_authorize_bad_characters(client, citizen, make_client, field, value, logged_in):
    client_id, _ = make_client()
    if logged_in:
        login(client)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "scope": "openid", "state": "s", "nonce": "n", field: value}
    resp = client.get("/oauth/authorize?" + urlencode(params, quote_via=quote))
    assert 400 <= resp.status_code < 500 or resp.status_code == 302, resp.status_code
    if resp.status_code == 302:  # an error sent back to the registered redirect URI only
        assert resp.headers["Location"].startswith(REDIRECT + "?")
        assert "error=" in resp.headers["Location"]


def test_deeply_nested_claims_parameter(client, citizen, make_client):
    client_id, _ = make_client()
    login(client)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "openid",
              "state": "s", "nonce": "n", "claims": "[" * 2000}
    resp = client.get("/oauth/authorize?" + urlencode(params))
    assert resp.status_code in (200, 302)  # the malformed claims are ignored, as any non-object


def test_deeply_nested_id_token_hint_at_logout(client, citizen):
    login(client)
    hint = base64.urlsafe_b64encode(b"[" * 5000).rstrip(b"=").decode() + ".e30.e30"
    resp = client.get("/oauth/logout?" + urlencode({"id_token_hint": hint}))
    assert resp.status_code < 500


def _client_credentials(client, client_id, secret, **extra):
    return client.post("/oauth/token", data={"grant_type": "client_credentials", **extra},
                       headers=basic(client_id, secret))


def test_grant_type_only_from_the_body(client, make_client):
    client_id, secret = make_client()
    resp = client.post("/oauth/token?grant_type=client_credentials", data={}, headers=basic(client_id, secret))
    assert resp.status_code == 400
    assert resp.get_json()["error"] in ("unsupported_grant_type", "invalid_request")
    # a query string never mixes with the body's parameters: the request is refused whole
    resp = client.post("/oauth/token?grant_type=refresh_token", data={"grant_type": "client_credentials"},
                       headers=basic(client_id, secret))
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request", resp.get_json()


@pytest.mark.parametrize("path,data", [
    ("/oauth/token", [("grant_type", "client_credentials"), ("grant_type", "client_credentials")]),
    ("/oauth/token", [("grant_type", "client_credentials"), ("scope", "openid"), ("scope", "profile")]),
    ("/oauth/introspect", [("token", "a"), ("token", "b")]),
    ("/oauth/revoke", [("token", "a"), ("token", "b")]),
])
def test_repeated_parameters_refused(client, make_client, path, data):
    client_id, secret = make_client()
    resp = client.post(path, data=urlencode(data), headers={**basic(client_id, secret),
                                                            "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_request"


def _introspect(client, client_id, secret, token):
    return client.post("/oauth/introspect", data={"token": token}, headers=basic(client_id, secret)).get_json()


def test_tampered_access_token_spellings_are_inactive(client, make_client):
    """The same signature spelled differently (``****`` inserted, padding, non-zero trailing
    bits, the high-S twin) is not the token that was issued."""
    from keys import jws

    client_id, secret = make_client()
    token = _client_credentials(client, client_id, secret).get_json()["access_token"]
    assert _introspect(client, client_id, secret, token)["active"] is True
    head, sig = token.rsplit(".", 1)
    raw = jws.b64d(sig)
    twin = jws.b64e(raw[:32] + (jws.P256_N - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    trailing = sig[:-1] + alphabet[alphabet.index(sig[-1]) + 1]
    for forged in (f"{head}.{sig[:8]}****{sig[8:]}", f"{head}.{sig}=", f"{head}.{trailing}", f"{head}.{twin}"):
        assert _introspect(client, client_id, secret, forged) == {"active": False}
        resp = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {forged}"})
        assert resp.status_code == 401
