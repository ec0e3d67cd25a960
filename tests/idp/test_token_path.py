"""The authorization-code exchange made cheaper (issue 14) refuses and revokes what it did before.

- The exchange reads the code, its person and the session's enterprise choice in ONE statement
  and claims the code at the end in ONE ``UPDATE ... WHERE used_at IS NULL`` that also records
  what it was exchanged for; a code claimed meanwhile by a concurrent exchange is a replay: this
  request is refused and the other one's tokens are revoked.
- The enterprise choice read with the code is checked on use as before: an authority withdrawn
  between the code and its exchange ends the session and refuses the exchange.
- The ID token is signed by the key's prebuilt compact signer: the same claims and a JWS that
  joserfc verifies, RS256 and ES256.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.flask_flows import REDIRECT, basic, login


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _code(client, client_id: str, scope: str = "openid profile") -> tuple[str, str, str]:
    """With a logged-in browser (first-party client: no consent): (code, verifier, nonce)."""
    verifier, challenge = _pkce()
    nonce = secrets.token_urlsafe(8)
    resp = client.get("/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
        "state": "st4te", "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}))
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    return parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0], verifier, nonce


def _exchange(client, client_id: str, secret: str, code: str, verifier: str):
    return client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                             "redirect_uri": REDIRECT, "code_verifier": verifier},
                       headers=basic(client_id, secret))


def _jwt_part(token: str, i: int) -> dict:
    import json

    part = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_an_exchange_reads_once_and_claims_once(app, client, citizen, make_client):
    from sqlalchemy import event, select

    from idp.models import AuthorizationCode, RefreshToken
    from tongban.clock import digest
    from tongban.extensions import db

    client_id, secret = make_client(first_party=True)
    assert login(client).status_code == 302
    code, verifier, _nonce = _code(client, client_id)
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_a):
        seen.append(" ".join(statement.split()))

    engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        resp = _exchange(client, client_id, secret, code, verifier)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    tok = resp.get_json()
    on_codes = [s for s in seen if "authorization_codes" in s]
    assert len(on_codes) == 2, on_codes
    read, claim = on_codes
    assert read.startswith("SELECT") and "JOIN users" in read and "JOIN enterprise_acting" in read
    assert claim.startswith("UPDATE authorization_codes") and "used_at IS NULL" in claim
    # nor the person nor the enterprise choice read again on their own
    assert not [s for s in seen if s.startswith("SELECT") and ("FROM users" in s or "FROM enterprise_acting" in s)]
    # what the code was exchanged for is on it, for a replay to revoke
    db.session.expire_all()
    row = db.session.execute(select(AuthorizationCode).where(AuthorizationCode.code_hash == digest(code))).scalar_one()
    family = db.session.execute(select(RefreshToken.family_id).where(
        RefreshToken.token_hash == digest(tok["refresh_token"]))).scalar_one()
    claims = _jwt_part(tok["access_token"], 1)
    assert row.used_at is not None
    assert (row.access_jti, row.access_exp, row.family_id) == (claims["jti"], claims["exp"], family)


def test_a_code_claimed_meanwhile_by_a_concurrent_exchange_revokes_its_tokens(app, client, citizen, make_client,
                                                                              monkeypatch):
    """Both exchanges read the code unused; the other one claims it and commits first: this one
    finds it claimed at the end, is refused, and the other one's tokens are revoked."""
    from idp import server

    client_id, secret = make_client(first_party=True)
    assert login(client).status_code == 302
    code, verifier, _nonce = _code(client, client_id)
    other: dict = {}
    real = server.AuthorizationCodeGrant.authenticate_user

    def race(self, authorization_code):  # this exchange has read the code; the other runs now
        if not other:
            other["started"] = True
            other["resp"] = app.test_client().post(
                "/oauth/token", headers=basic(client_id, secret),
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                      "code_verifier": verifier})
        return real(self, authorization_code)

    monkeypatch.setattr(server.AuthorizationCodeGrant, "authenticate_user", race)
    resp = _exchange(client, client_id, secret, code, verifier)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"
    assert "access_token" not in resp.get_json()
    won = other["resp"]
    assert won.status_code == 200, won.get_data(as_text=True)
    tok = won.get_json()
    monkeypatch.undo()
    info = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {tok['access_token']}"})
    assert info.status_code == 401
    refreshed = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]},
                            headers=basic(client_id, secret))
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"


def test_a_replayed_code_is_still_refused_and_revokes(app, client, citizen, make_client):
    client_id, secret = make_client(first_party=True)
    assert login(client).status_code == 302
    code, verifier, _nonce = _code(client, client_id)
    first = _exchange(client, client_id, secret, code, verifier)
    assert first.status_code == 200
    again = _exchange(client, client_id, secret, code, verifier)
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    info = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {first.get_json()['access_token']}"})
    assert info.status_code == 401
    # another client presenting the code neither gets it nor revokes the first one's tokens
    other_id, other_secret = make_client(first_party=True)
    code2, verifier2, _ = _code(client, client_id)
    stolen = _exchange(client, other_id, other_secret, code2, verifier2)
    assert stolen.status_code == 400 and stolen.get_json()["error"] == "invalid_grant"
    assert _exchange(client, client_id, secret, code2, verifier2).status_code == 200


def test_an_authority_withdrawn_before_the_exchange_ends_the_session(app, client, citizen, make_client):
    """The enterprise choice read with the code is checked on use as a choice read on its own."""
    from people.enterprise import EnterpriseActing
    from people.models import LoginSession, Organisation, User
    from tongban.clock import utcnow
    from tongban.extensions import db

    client_id, secret = make_client(first_party=True, scopes=["openid", "profile", "enterprise"])
    assert login(client).status_code == 302
    sess = db.session.query(LoginSession).filter_by(user_id=citizen.id).one()
    org = Organisation(uscc="91350100M000100Y43", name="某某有限公司", legal_rep_id=citizen.id, created_at=utcnow())
    db.session.add(org)
    db.session.flush()
    db.session.add(EnterpriseActing(sid=sess.sid, client_id=client_id, org_id=org.id, role="legal_rep",
                                    chosen_at=utcnow()))
    db.session.commit()
    # while the authority holds, the ID token carries it
    code, verifier, _ = _code(client, client_id, "openid profile enterprise")
    ok = _exchange(client, client_id, secret, code, verifier)
    assert ok.status_code == 200, ok.get_data(as_text=True)
    claims = _jwt_part(ok.get_json()["id_token"], 1)
    assert (claims["org_uscc"], claims["org_role"]) == ("91350100M000100Y43", "legal_rep")
    # a new legal representative between the code and its exchange: refused, the session ended
    code, verifier, _ = _code(client, client_id, "openid profile enterprise")
    someone = User(sub="someone-else", id_number="110101199003074578", name="李四", phone=None,
                   password_hash="!", assurance_level=1, created_at=utcnow())
    db.session.add(someone)
    db.session.flush()
    db.session.get(Organisation, org.id).legal_rep_id = someone.id
    db.session.commit()
    from sqlalchemy import func, select

    from idp.models import AuthorizationCode, RefreshToken
    from tongban.clock import digest

    refresh_rows = db.session.scalar(select(func.count()).select_from(RefreshToken))
    refused = _exchange(client, client_id, secret, code, verifier)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    db.session.expire_all()
    ended = db.session.get(LoginSession, sess.id)
    assert ended.ended_at is not None and ended.end_reason == "enterprise_authority_withdrawn"
    # nothing of the refused exchange was kept, and its code is used up
    assert db.session.scalar(select(func.count()).select_from(RefreshToken)) == refresh_rows
    row = db.session.execute(select(AuthorizationCode).where(AuthorizationCode.code_hash == digest(code))).scalar_one()
    assert row.used_at is not None and row.family_id is None


def _verify_with_joserfc(app, id_token: str, alg: str) -> dict:
    from joserfc import jwt
    from joserfc.jwk import import_key

    from keys.services import keyring

    with app.app_context():
        key = keyring().active(alg)
        header = _jwt_part(id_token, 0)
        assert header == {"alg": alg, "kid": key.kid, "typ": "JWT"}
        return jwt.decode(id_token, import_key(key.public), algorithms=[alg]).claims


def test_the_id_token_is_the_one_joserfc_would_sign(app, client, citizen, make_client):
    from authlib.oidc.core.util import create_half_hash
    from joserfc import jwt

    from keys.services import keyring
    from tongban.extensions import db

    assert login(client).status_code == 302
    for alg in ("RS256", "ES256"):
        client_id, secret = make_client(first_party=True, id_token_signed_response_alg=alg)
        code, verifier, nonce = _code(client, client_id)
        resp = _exchange(client, client_id, secret, code, verifier)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        tok = resp.get_json()
        claims = _verify_with_joserfc(app, tok["id_token"], alg)
        assert claims["at_hash"] == create_half_hash(tok["access_token"], alg).decode()
        assert claims["nonce"] == nonce and claims["aud"] == [client_id] and claims["azp"] == client_id
        assert claims["iss"] == app.config["TONGBAN_ISSUER"] and claims["sub"] == citizen.sub
        assert claims["name"] == "张三" and claims["sid"] and claims["auth_time"] <= claims["iat"]
        # joserfc's own encoding of the same claims carries the very same payload bytes
        with app.app_context():
            key = keyring().active(alg)
            theirs = jwt.encode({"alg": alg, "kid": key.kid}, claims, key.signer, [alg])
        assert theirs.split(".")[1] == tok["id_token"].split(".")[1]
    db.session.rollback()


def test_a_reloaded_key_ring_keeps_the_keys_it_unsealed(app):
    """The ring is loaded again at every keys generation change and every minute: an unchanged
    key row keeps its unsealed key and signers; the same kid sealed anew is unsealed anew."""
    from keys import services
    from keys.crypto import seal_private_key
    from keys.models import SigningKey
    from tongban.extensions import db

    key = services.keyring().active("RS256")
    private, signer = key.private_key, key.compact_signer("JWT")
    services._ring.invalidate()
    again = services.keyring().active("RS256")
    assert again is not key and again.kid == key.kid
    assert again.private_key is private and again.compact_signer("JWT") is signer
    row = db.session.get(SigningKey, key.kid)
    row.private_key = seal_private_key(private, key.kid)  # other bytes (a new nonce), the same key
    db.session.commit()
    services._ring.invalidate()
    third = services.keyring().active("RS256")
    assert third.private_key is not private
    assert third.private_key.private_numbers() == private.private_numbers()
    assert third.compact_signer("JWT") is not signer


def test_a_code_of_an_account_disabled_since_is_refused(app, client, citizen, make_client):
    """The person now comes with the code's own read: an account disabled between the code and
    its exchange gets no tokens."""
    from sqlalchemy import update

    from people.models import User
    from tongban.extensions import db

    client_id, secret = make_client(first_party=True)
    assert login(client).status_code == 302
    code, verifier, _nonce = _code(client, client_id)
    db.session.execute(update(User).where(User.id == citizen.id).values(disabled=True))
    db.session.commit()
    refused = _exchange(client, client_id, secret, code, verifier)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    assert "access_token" not in refused.get_json()
