"""Token-signing keys: one active per algorithm, rotation with publish-before-use,
retirement after the longest token lifetime, private halves encrypted at rest."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from joserfc.jws import extract_compact
from sqlalchemy import select, text

from keys import crypto, services
from keys.models import SigningKey
from tests.flask_flows import authorize_code, basic, exchange, login
from tongban.extensions import db


def _cli(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _listed(app) -> dict[str, tuple[str, str]]:
    """``keys list`` parsed: kid -> (alg, state)."""
    out = {}
    for line in _cli(app, "keys", "list").splitlines():
        kid, alg, state = line.split()[:3]
        out[kid] = (alg, state)
    return out


def _jwks_kids(client) -> set[str]:
    resp = client.get("/jwks.json")
    assert resp.status_code == 200
    keys = resp.get_json()["keys"]
    for k in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k), "a private member is published"
    return {k["kid"] for k in keys}


def _kid(jwt: str) -> str:
    return extract_compact(jwt.encode()).headers()["kid"]


def _tokens(client, client_id: str, secret: str) -> tuple[str, str]:
    """(access token kid (ES256), ID token kid (RS256)) of a fresh code flow."""
    code = authorize_code(client, client_id)
    resp = exchange(client, client_id, secret, code)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert extract_compact(body["id_token"].encode()).headers()["alg"] == "RS256"
    assert extract_compact(body["access_token"].encode()).headers()["alg"] == "ES256"
    return _kid(body["access_token"]), _kid(body["id_token"])


def _advance(seconds: float) -> None:
    """Let time pass for the key store (instead of waiting): every key's activation moves
    back by ``seconds``, then the key ring reloads."""
    for row in db.session.execute(select(SigningKey)).scalars():
        row.activates_at -= timedelta(seconds=seconds)
    db.session.commit()
    services.KEYS_GENERATION.bump()
    services._ring._value = None


@pytest.fixture
def web(app, browser, citizen, make_client, restore_keys):
    client = browser()
    client_id, secret = make_client(first_party=True)
    assert login(client).status_code == 302
    return client, client_id, secret


def _active_by_alg(listed) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kid, (alg, state) in listed.items():
        if state == "active":
            out.setdefault(alg, []).append(kid)
    return out


def test_upgrade_created_one_active_key_per_algorithm(app, browser):
    listed = _listed(app)
    assert sorted(alg for alg, _ in listed.values()) == ["ES256", "RS256"]
    assert {state for _, state in listed.values()} == {"active"}
    assert _jwks_kids(browser()) == set(listed)
    # a second bootstrap (db upgrade on every deploy) creates nothing
    assert services.ensure_keys() == []


def test_rotation_publishes_first_signs_later_retires_last(app, web):
    client, client_id, secret = web
    before = _listed(app)
    old = {alg: kids[0] for alg, kids in _active_by_alg(before).items()}
    assert _tokens(client, client_id, secret) == (old["ES256"], old["RS256"])

    out = _cli(app, "keys", "rotate")
    assert out.count(" next ") == 2
    listed = _listed(app)
    new = {alg: kid for kid, (alg, state) in listed.items() if kid not in before}
    assert set(new) == {"ES256", "RS256"}
    assert all(listed[kid][1] == "next" for kid in new.values())
    assert all(listed[kid][1] == "active" for kid in old.values())
    # published at once ...
    assert set(new.values()) | set(old.values()) <= _jwks_kids(client)
    # ... but tokens are still signed with the old keys
    assert _tokens(client, client_id, secret) == (old["ES256"], old["RS256"])
    delay = app.config["TONGBAN_KEY_ACTIVATION_DELAY"]
    row = db.session.get(SigningKey, new["RS256"])
    assert abs(row.activates_at - row.created_at - timedelta(seconds=delay)) < timedelta(seconds=5)

    # the activation delay has passed
    _advance(delay + 1)
    listed = _listed(app)
    assert all(listed[kid][1] == "active" for kid in new.values())
    assert all(listed[kid][1] == "retired" for kid in old.values())
    assert _tokens(client, client_id, secret) == (new["ES256"], new["RS256"])
    assert set(new.values()) | set(old.values()) <= _jwks_kids(client)  # old tokens still verify

    # almost the longest token lifetime later: still published
    lifetime = services.max_token_lifetime()
    _advance(lifetime - 30)
    assert set(old.values()) <= _jwks_kids(client)
    # and then gone from the JWKS (still listed, as retired)
    _advance(31)
    kids = _jwks_kids(client)
    assert set(new.values()) <= kids and not set(old.values()) & kids
    listed = _listed(app)
    assert all(listed[kid][1] == "retired" for kid in old.values())


def test_rotate_with_no_delay_signs_at_once(app, web):
    client, client_id, secret = web
    before = set(_listed(app))
    out = _cli(app, "keys", "rotate", "--alg", "RS256", "--delay", "0")
    assert out.count("RS256") == 1
    listed = _listed(app)
    (new,) = set(listed) - before
    assert listed[new] == ("RS256", "active")
    assert len(_active_by_alg(listed)["RS256"]) == 1 and len(_active_by_alg(listed)["ES256"]) == 1
    assert _tokens(client, client_id, secret)[1] == new
    assert new in _jwks_kids(client)


def test_rotation_is_audited(app, restore_keys):
    from tongban.audit import AuditLog

    _cli(app, "keys", "rotate")
    rows = db.session.execute(select(AuditLog).where(AuditLog.action == "key.rotated")).scalars().all()
    assert len(rows) == 2


def test_tokens_signed_by_a_retired_key_still_verify_until_it_is_unpublished(app, web):
    """An access token signed before rotation is accepted while its key is published."""
    client, client_id, secret = web
    resp = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                       headers=basic(client_id, secret))
    assert resp.status_code == 200
    at = resp.get_json()["access_token"]
    _cli(app, "keys", "rotate", "--delay", "0")
    assert _kid(at) in _jwks_kids(client)
    resp = client.post("/oauth/introspect", data={"token": at}, headers=basic(client_id, secret))
    assert resp.status_code == 200 and resp.get_json()["active"] is True


# ---------------------------------------------------------------- encryption at rest


def _raw_rows() -> list[tuple[str, bytes]]:
    with db.engine.connect() as conn:
        return [(r[0], bytes(r[1])) for r in conn.execute(text("SELECT kid, private_key FROM signing_keys"))]


def test_private_keys_are_encrypted_at_rest(app):
    rows = _raw_rows()
    assert len(rows) >= 2
    for kid, blob in rows:
        assert b"PRIVATE KEY" not in blob and b"-----BEGIN" not in blob
        assert not blob.startswith(b"\x30")  # not a DER SEQUENCE
        with pytest.raises(ValueError):
            serialization.load_der_private_key(blob, password=None)
        key = crypto.unseal_private_key(blob, kid)  # with the KEK it opens
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        assert der not in blob and der[-32:] not in blob
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        assert pem not in blob
        public = json.loads(db.session.get(SigningKey, kid).public_jwk)
        assert "d" not in public


def test_another_kek_cannot_open_them(app):
    kid, blob = _raw_rows()[0]
    saved = app.config["TONGBAN_KEK"]
    try:
        app.config["TONGBAN_KEK"] = bytes(reversed(saved))
        with pytest.raises(InvalidTag):
            crypto.unseal_private_key(blob, kid)
    finally:
        app.config["TONGBAN_KEK"] = saved


def test_a_blob_is_bound_to_its_kid(app):
    (kid1, blob1), (kid2, _) = _raw_rows()[:2]
    with pytest.raises(InvalidTag):
        crypto.unseal_private_key(blob1, kid2)
    tampered = blob1[:-1] + bytes([blob1[-1] ^ 1])
    with pytest.raises(InvalidTag):
        crypto.unseal_private_key(tampered, kid1)
