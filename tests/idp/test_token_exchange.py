"""Token exchange (RFC 8693) over real HTTP, driven by Authlib's client (OAuth2Session): a
department's system exchanges a citizen's access token for one addressed to another
department's system, and every forgery or overreach is refused."""

from __future__ import annotations

import json
import secrets

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from sqlalchemy import select

from tests.conftest import CITIZEN_ID
from tests.idp.helpers import REDIRECT, Browser, discover

TE = "urn:ietf:params:oauth:grant-type:token-exchange"
AT = "urn:ietf:params:oauth:token-type:access_token"
RESOURCE = "https://api.tax.example.gov.cn/v1"


@pytest.fixture
def disco(live_server):
    return discover(live_server)


@pytest.fixture
def systems(make_client):
    """B (social security, the target), A (housing fund, may exchange to B and RESOURCE),
    C (may exchange to B too, but holds no token of its own), D (B may exchange on to D)."""
    d = make_client(client_id="dept-d", name="民政系统", department="民政局", redirect_uris=[],
                    grant_types=["client_credentials"], scopes=["openid", "profile"])
    b = make_client(client_id="dept-b", name="社保系统", department="人社局", redirect_uris=[],
                    grant_types=["client_credentials", TE], scopes=["openid", "profile"],
                    exchange_targets=["dept-d"])
    a = make_client(client_id="dept-a", name="公积金系统", department="住房公积金管理中心", first_party=True,
                    grant_types=["authorization_code", "refresh_token", TE],
                    scopes=["openid", "profile", "phone"], exchange_targets=["dept-b", RESOURCE])
    c = make_client(client_id="dept-c", name="另一个系统", department="某局", first_party=True,
                    grant_types=["authorization_code", TE], scopes=["openid", "profile"],
                    exchange_targets=["dept-b"])
    return {"a": a, "b": b, "c": c, "d": d}


def _citizen_token(live_server, disco, client, scope="openid profile phone") -> dict:
    """The citizen logs in to ``client`` (code flow with PKCE, Authlib's client)."""
    cid, secret = client
    oauth = OAuth2Session(cid, secret, scope=scope, redirect_uri=REDIRECT, code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    url, _state = oauth.create_authorization_url(disco["authorization_endpoint"], code_verifier=verifier,
                                                 nonce=secrets.token_urlsafe(12))
    step = Browser(live_server).authorize(url)
    return oauth.fetch_token(disco["token_endpoint"], authorization_response=step.url, code_verifier=verifier)


def _exchange(disco, client, subject_token, **params) -> dict:
    cid, secret = client
    oauth = OAuth2Session(cid, secret)
    params.setdefault("subject_token_type", AT)
    return oauth.fetch_token(disco["token_endpoint"], grant_type=TE, subject_token=subject_token, **params)


def _refused(disco, client, subject_token, error, **params):
    with pytest.raises(OAuthError) as caught:
        _exchange(disco, client, subject_token, **params)
    assert caught.value.error == error, (caught.value.error, caught.value.description)
    return caught.value


def _claims(raw: str) -> dict:
    from idp.tokens import decode_access_token

    tok = decode_access_token(raw)
    assert tok is not None
    return tok.claims


def _introspect(disco, client, raw) -> dict:
    resp = requests.post(disco["introspection_endpoint"], data={"token": raw}, auth=client)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_discovery_lists_the_grant(disco):
    assert TE in disco["grant_types_supported"]


def test_exchange_for_another_department(app, live_server, disco, citizen, systems):
    subject = _citizen_token(live_server, disco, systems["a"])
    sc = _claims(subject["access_token"])
    out = _exchange(disco, systems["a"], subject["access_token"], audience="dept-b", purpose="办理社保转移")
    assert out["issued_token_type"] == AT and out["token_type"].lower() == "bearer"
    assert "refresh_token" not in out
    c = _claims(out["access_token"])
    assert c["sub"] == citizen.sub == sc["sub"]
    assert c["aud"] == "dept-b" and c["client_id"] == "dept-a"
    assert c["act"] == {"sub": "dept-a"}
    # the subject token's scope, cut to what the target system is registered for
    assert set(c["scope"].split()) == {"openid", "profile"} and out["scope"] == c["scope"]
    assert c["exp"] <= sc["exp"] and c["sid"] == sc["sid"] and c["jti"] != sc["jti"]
    # the target introspects it and sees who acts
    seen = _introspect(disco, systems["b"], out["access_token"])
    assert seen["active"] is True and seen["act"] == {"sub": "dept-a"} and seen["sub"] == citizen.sub
    # a narrower scope on request
    narrow = _exchange(disco, systems["a"], subject["access_token"], audience="dept-b", scope="openid")
    assert _claims(narrow["access_token"])["scope"] == "openid"
    # audited, with both systems, the purpose, and the citizen masked
    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    rows = db.session.execute(select(AuditLog).where(AuditLog.action == "token.exchanged")).scalars().all()
    assert len(rows) == 2
    detail = json.loads(rows[0].detail)
    assert detail["from"] == "dept-a" and detail["to"] == "dept-b" and detail["purpose"] == "办理社保转移"
    assert CITIZEN_ID not in rows[0].detail and detail["citizen"].endswith(CITIZEN_ID[-4:])


def test_exchange_for_a_resource_uri(app, live_server, disco, citizen, systems):
    subject = _citizen_token(live_server, disco, systems["a"])
    out = _exchange(disco, systems["a"], subject["access_token"], resource=RESOURCE)
    c = _claims(out["access_token"])
    assert c["aud"] == RESOURCE and c["act"] == {"sub": "dept-a"}
    # a near-miss of the registered resource is another resource
    _refused(disco, systems["a"], subject["access_token"], "invalid_target", resource=RESOURCE + "/")


def test_act_chain_nests(app, live_server, disco, citizen, systems):
    subject = _citizen_token(live_server, disco, systems["a"])
    to_b = _exchange(disco, systems["a"], subject["access_token"], audience="dept-b")
    to_d = _exchange(disco, systems["b"], to_b["access_token"], audience="dept-d")
    c = _claims(to_d["access_token"])
    assert c["aud"] == "dept-d" and c["client_id"] == "dept-b" and c["sub"] == citizen.sub
    assert c["act"] == {"sub": "dept-b", "act": {"sub": "dept-a"}}
    assert _introspect(disco, systems["d"], to_d["access_token"])["act"] == c["act"]
    # B cannot hand the token it received back to A's target list, nor exchange A's own token
    _refused(disco, systems["b"], to_b["access_token"], "invalid_target", audience="dept-a")
    _refused(disco, systems["b"], subject["access_token"], "invalid_grant", audience="dept-d")


def test_targets_not_allowed_are_refused(app, live_server, disco, citizen, systems):
    subject = _citizen_token(live_server, disco, systems["a"])
    raw = subject["access_token"]
    _refused(disco, systems["a"], raw, "invalid_target", audience="dept-d")  # registered, not allowed
    _refused(disco, systems["a"], raw, "invalid_target", audience="no-such-system")
    _refused(disco, systems["a"], raw, "invalid_target")  # no target named
    _refused(disco, systems["a"], raw, "invalid_target", audience="dept-b", resource=RESOURCE)
    # more scope than the subject token has, or than the target is registered for
    _refused(disco, systems["a"], raw, "invalid_scope", audience="dept-b", scope="openid id_number")
    _refused(disco, systems["a"], raw, "invalid_scope", audience="dept-b", scope="phone")
    # a disabled target
    from idp import clients as registry
    from tongban.extensions import db

    registry.set_enabled("dept-b", False)
    db.session.commit()
    _refused(disco, systems["a"], raw, "invalid_target", audience="dept-b")
    from tongban.audit import AuditLog

    db.session.expire_all()
    refused = db.session.execute(select(AuditLog).where(AuditLog.action == "token.exchange_refused")).scalars().all()
    assert len(refused) == 7 and all(r.outcome == "failure" for r in refused)


def test_another_systems_token_cannot_be_exchanged(app, live_server, disco, citizen, systems):
    """C is allowed to exchange to B, but the token was issued to A: stolen, it is worthless to C."""
    subject = _citizen_token(live_server, disco, systems["a"])
    _refused(disco, systems["c"], subject["access_token"], "invalid_grant", audience="dept-b")


def test_public_clients_cannot_exchange(app, live_server, disco, citizen, systems, make_client):
    from tongban.errors import ValidationError

    with pytest.raises(ValidationError):
        make_client(name="公开", grant_types=["authorization_code", TE], token_endpoint_auth_method="none")
    pub, _ = make_client(client_id="public-app", grant_types=["authorization_code"],
                         token_endpoint_auth_method="none")
    subject = _citizen_token(live_server, disco, systems["a"])
    resp = requests.post(disco["token_endpoint"], data={
        "grant_type": TE, "client_id": pub, "subject_token": subject["access_token"],
        "subject_token_type": AT, "audience": "dept-b"})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client", resp.text
    # a confidential system not registered for the grant
    _refused(disco, systems["d"], subject["access_token"], "unauthorized_client", audience="dept-b")


def test_expired_forged_revoked_and_logged_out_tokens(app, live_server, disco, citizen, systems):
    from idp import tokens
    from people import sessions
    from people.models import LoginSession
    from tongban.clock import epoch
    from tongban.extensions import db

    subject = _citizen_token(live_server, disco, systems["a"])
    raw = subject["access_token"]
    claims = _claims(raw)
    # expired (signed by the provider's own key, so only the expiry is wrong)
    old = dict(claims, iat=epoch() - 700, exp=epoch() - 1, jti="expired-jti")
    _refused(disco, systems["a"], tokens.sign_jwt(old, "ES256", typ="at+jwt"), "invalid_grant", audience="dept-b")
    # forged: the payload changed after signing
    head, _payload, sig = raw.split(".")
    import base64

    evil = base64.urlsafe_b64encode(json.dumps(dict(claims, sub="someone-else")).encode()).rstrip(b"=").decode()
    _refused(disco, systems["a"], f"{head}.{evil}.{sig}", "invalid_grant", audience="dept-b")
    # an ID token or a refresh token is not an access token
    _refused(disco, systems["a"], subject["id_token"], "invalid_grant", audience="dept-b")
    _refused(disco, systems["a"], subject["refresh_token"], "invalid_grant", audience="dept-b")
    _refused(disco, systems["a"], raw, "invalid_request", audience="dept-b",
             subject_token_type="urn:ietf:params:oauth:token-type:id_token")
    _refused(disco, systems["a"], raw, "invalid_request", audience="dept-b", actor_token=raw, actor_token_type=AT)
    _refused(disco, systems["a"], raw, "invalid_request", audience="dept-b", purpose="a\nb")
    # a short-lived subject token: the exchanged one lives no longer
    short = tokens.sign_jwt(dict(claims, exp=epoch() + 30, jti="short-jti"), "ES256", typ="at+jwt")
    out = _exchange(disco, systems["a"], short, audience="dept-b")
    assert out["expires_in"] <= 30 and _claims(out["access_token"])["exp"] <= epoch() + 30
    # revoked by its system
    revoked = requests.post(disco["revocation_endpoint"], data={"token": raw}, auth=systems["a"])
    assert revoked.status_code == 200
    _refused(disco, systems["a"], raw, "invalid_grant", audience="dept-b")
    # the citizen logs out: a fresh token of that session, and what was exchanged from it, die
    subject2 = _citizen_token(live_server, disco, systems["a"])
    exchanged = _exchange(disco, systems["a"], subject2["access_token"], audience="dept-b")
    sess = db.session.execute(select(LoginSession).where(
        LoginSession.sid == _claims(subject2["access_token"])["sid"])).scalar_one()
    sessions.end(sess, "logout")
    db.session.commit()
    _refused(disco, systems["a"], subject2["access_token"], "invalid_grant", audience="dept-b")
    assert _introspect(disco, systems["b"], exchanged["access_token"])["active"] is False


def test_audience_may_introspect_only_tokens_made_for_it(app, live_server, disco, citizen, systems):
    subject = _citizen_token(live_server, disco, systems["a"])
    # B is not the audience of A's token: it learns nothing
    assert _introspect(disco, systems["b"], subject["access_token"]) == {"active": False}


def test_cli_allow_list(app, make_client):
    runner = app.test_cli_runner()
    make_client(client_id="target-sys", redirect_uris=[], grant_types=["client_credentials"])
    ok = runner.invoke(args=["clients", "create", "--name", "甲", "--department", "乙", "--client-id", "from-sys",
                             "--grant-type", "client_credentials", "--grant-type", TE,
                             "--may-exchange-to", "target-sys", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["exchange_targets"] == ["target-sys"]
    added = runner.invoke(args=["clients", "allow-exchange", "from-sys", RESOURCE])
    assert added.exit_code == 0 and RESOURCE in added.output
    removed = runner.invoke(args=["clients", "disallow-exchange", "from-sys", "target-sys"])
    assert removed.exit_code == 0 and "target-sys" not in removed.output.split(":", 1)[1]
    from idp import clients as registry

    assert registry.get_client("from-sys").exchange_targets == (RESOURCE,)
    for args, words in (
        (["clients", "allow-exchange", "from-sys", "nobody"], "neither a registered client_id"),
        (["clients", "allow-exchange", "from-sys", "http://evil.example/x"], "https"),
        (["clients", "create", "--name", "x", "--department", "y", "--grant-type", "client_credentials",
          "--may-exchange-to", "target-sys"],
         "need the grant type"),
        (["clients", "create", "--name", "x", "--department", "y", "--public", "--redirect-uri",
          "http://127.0.0.1:9/cb", "--grant-type", "authorization_code", "--grant-type", TE], "public client"),
    ):
        bad = runner.invoke(args=args)
        assert bad.exit_code == 1, bad.output
        assert bad.output.count("\n") == 1 and words in bad.output, bad.output


def test_admin_page_edits_the_allow_list(app, client, make_client):
    from idp import clients as registry
    from people import accounts
    from tests.conftest import OTHER_ID, PASSWORD
    from tests.idp.test_admin import login, register_form
    from tongban.extensions import db

    accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    db.session.commit()
    csrf = login(client)
    make_client(client_id="dept-b", redirect_uris=[], grant_types=["client_credentials"])
    cid, _ = make_client(client_id="dept-a", redirect_uris=[], grant_types=["client_credentials"])
    form = register_form(csrf, redirect_uris="", grant_types=["client_credentials", TE], exchange_targets="dept-b\n")
    resp = client.post(f"/admin/clients/{cid}", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    db.session.expire_all()
    assert registry.get_row(cid).exchange_targets == ["dept-b"]
    assert "dept-b" in client.get(f"/admin/clients/{cid}").get_data(as_text=True)
    # an unknown target is refused and changes nothing
    bad = client.post(f"/admin/clients/{cid}", data=dict(form, exchange_targets="dept-b\nnobody"))
    assert bad.status_code == 400 and "nobody" in bad.get_data(as_text=True)
    db.session.expire_all()
    assert registry.get_row(cid).exchange_targets == ["dept-b"]
