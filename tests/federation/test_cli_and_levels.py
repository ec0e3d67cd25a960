"""``flask upstreams`` (the secret sealed at rest, never shown; bad input refused with one line)
and the level a log-in through an upstream is worth."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.federation.conftest import CLIENT_ID, CLIENT_SECRET


def _run(app, *args, stdin=None):
    return app.test_cli_runner().invoke(args=list(args), input=stdin)


def test_add_list_disable_enable(app, client):
    from federation.models import Upstream
    from tongban.extensions import db

    added = _run(app, "upstreams", "add", "--name", "province", "--issuer", "https://idp.zj.gov.cn",
                 "--client-id", CLIENT_ID, "--client-secret-stdin", "--display-name", "省政务服务网",
                 "--acr-map", "loa-high=L3", "--acr-map", "urn:gov:loa:2=L2", "--json", stdin=CLIENT_SECRET + "\n")
    assert added.exit_code == 0, added.output
    data = json.loads(added.output)
    assert data["redirect_uri"].endswith("/federation/province/callback")
    assert data["backchannel_logout_uri"].endswith("/federation/province/backchannel-logout")
    assert data["acr_map"] == {"loa-high": "L3", "urn:gov:loa:2": "L2"}
    row = db.session.execute(select(Upstream)).scalar_one()
    assert CLIENT_SECRET.encode() not in row.client_secret  # sealed under the KEK
    from federation import registry

    assert registry.get("province").client_secret() == CLIENT_SECRET
    listed = _run(app, "upstreams", "list", "--json")
    assert listed.exit_code == 0 and CLIENT_SECRET not in listed.output
    assert [u["name"] for u in json.loads(listed.output)] == ["province"]
    assert "用省政务服务网登录" in client.get("/login").get_data(as_text=True)

    assert _run(app, "upstreams", "disable", "province").exit_code == 0
    assert "用省政务服务网登录" not in client.get("/login").get_data(as_text=True)
    assert registry.get("province") is None
    assert _run(app, "upstreams", "enable", "province").exit_code == 0
    assert registry.get("province") is not None
    from tongban.audit import AuditLog

    actions = [a.action for a in db.session.execute(select(AuditLog).order_by(AuditLog.id)).scalars()]
    assert [a for a in actions if a.startswith("federation.upstream")] == [
        "federation.upstream_added", "federation.upstream_disabled", "federation.upstream_enabled"]


@pytest.mark.parametrize("args,stdin,message", [
    (["--issuer", "http://idp.example.gov.cn"], "s\n", "https"),
    (["--issuer", "https://idp.example.gov.cn?x=1"], "s\n", "query"),
    (["--issuer", "https://idp.example.gov.cn", "--acr-map", "loa-high=L9"], "s\n", "acr"),
    (["--issuer", "https://idp.example.gov.cn", "--scope", "profile"], "s\n", "openid"),
    (["--issuer", "https://idp.example.gov.cn"], "\n", "secret"),
    (["--issuer", "https://idp.example.gov.cn", "--name", "Bad Name"], "s\n", "name"),
])
def test_bad_input_is_one_line_and_changes_nothing(app, args, stdin, message):
    from federation.models import Upstream
    from tongban.extensions import db

    base = ["upstreams", "add", "--client-id", "c", "--client-secret-stdin"]
    if "--name" not in args:
        base += ["--name", "province"]
    result = _run(app, *base, *args, stdin=stdin)
    assert result.exit_code == 1
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0].lower(), result.output
    assert db.session.execute(select(Upstream)).first() is None


def test_duplicate_and_unknown_names(app):
    args = ["upstreams", "add", "--name", "p", "--issuer", "https://a.example", "--client-id", "c",
            "--client-secret-stdin"]
    assert _run(app, *args, stdin="s\n").exit_code == 0
    again = _run(app, *args, stdin="s\n")
    assert again.exit_code == 1 and "exists" in again.output
    assert _run(app, "upstreams", "disable", "nope").exit_code == 1
    no_stdin = _run(app, "upstreams", "add", "--name", "q", "--issuer", "https://a.example", "--client-id", "c")
    assert no_stdin.exit_code == 1


@pytest.mark.parametrize("acr,expected", [
    ("loa-high", "L3"),          # the map says L3
    ("loa-substantial", "L2"),
    ("loa-unknown", "L1"),       # not in the map: the unmapped level
    (None, "L1"),                # no acr asserted
    ("L2", "L2"),                # mapped to L4, but the upstream itself said L2: never more
    ("L4", "L4"),
])
def test_granted_level(app, acr, expected):
    from federation.registry import UpstreamInfo, granted_level

    up = UpstreamInfo(id=1, name="p", display_name="p", issuer="https://a", client_id="c", scope="openid",
                      id_number_claim="id_number", verified_claim="id_number_verified", name_claim="name",
                      acr_map={"loa-high": "L3", "loa-substantial": "L2", "L2": "L4", "L4": "L4"})
    assert granted_level(up, acr) == expected
    assert granted_level(up, "loa-unknown", "L2") == "L2"
    assert granted_level(up, "loa-unknown", "L3") == "L1"  # the unmapped level is at most L2


def test_purge_forgets_old_rows(app, citizen):
    from datetime import timedelta

    from federation import chores
    from federation.models import FederatedSession, FederationRequest, UsedLogoutToken
    from tests.federation.conftest import register
    from tests.idp.helpers import proven_session
    from tongban.clock import utcnow
    from tongban.extensions import db

    up = register("p", "https://idp.example.gov.cn")
    old, live = proven_session(citizen), proven_session(citizen)
    old.ended_at = utcnow() - timedelta(days=2)
    for sess in (old, live):
        db.session.add(FederatedSession(sid=sess.sid, upstream_id=up.id, upstream_sub="s", id_token=b"x",
                                        created_at=utcnow()))
    db.session.add(FederationRequest(state_hash="a" * 64, upstream_id=up.id, browser_hash="b", secrets=b"x",
                                     next_url="/", expires_at=utcnow() - timedelta(seconds=1)))
    db.session.add(UsedLogoutToken(upstream_id=up.id, jti="j", expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert chores.purge() == {"requests": 1, "jtis": 1, "sessions": 1}
    assert [r.sid for r in db.session.execute(select(FederatedSession)).scalars()] == [live.sid]
