"""The administrators' console: the register of government systems, accounts, the audit log."""

import base64
import re
from datetime import timedelta

import pytest
from flask import g
from flask.testing import FlaskClient
from freezegun import freeze_time
from sqlalchemy import func, select

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD

REDIRECT = "https://bureau.example.gov.cn/callback"


class Browser(FlaskClient):
    """A test client whose every request starts with an empty ``g``, as in production.

    The ``app`` fixture keeps one application context pushed for the whole test and
    Flask's test client reuses it, so ``g`` (with the memoised SSO session) would
    otherwise carry over from one request, and one browser, to the next.
    """

    def open(self, *args, **kwargs):
        vars(g).clear()
        return super().open(*args, **kwargs)


@pytest.fixture
def client(app):
    return Browser(app, app.response_class, use_cookies=True)


def browser(app):
    return Browser(app, app.response_class, use_cookies=True)


def csrf_of(page) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def login(client, who=OTHER_ID):
    token = csrf_of(client.get("/login"))
    resp = client.post("/login", data={"csrf_token": token, "login": who, "password": PASSWORD, "next": ""})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    # the log-in renewed the CSRF secret: the forms from now on carry a token of the new one
    assert csrf_of(client.get("/login?force=1")) != token
    return csrf_of(client.get("/login?force=1"))


@pytest.fixture
def admin(app):
    from people import accounts
    from tongban.extensions import db

    user = accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    db.session.commit()
    return user


@pytest.fixture
def admin_client(client, admin):
    client.csrf = login(client)
    return client


def token_request(client, client_id, secret):
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "openid"},
                       headers={"Authorization": f"Basic {basic}"})


def register_form(csrf, **over):
    data = {
        "csrf_token": csrf, "name": "不动产登记系统", "department": "自然资源和规划局",
        "function": "不动产登记受理与查询", "scope_of_use": "全市不动产登记窗口", "approver": "市发展改革委",
        "approval_date": "2019-06-30", "funding_source": "市级财政", "contact": "李四 0570-1234567",
        "redirect_uris": f"{REDIRECT}\n", "post_logout_redirect_uris": "",
        "backchannel_logout_uri": "", "grant_types": ["authorization_code", "client_credentials"],
        "scopes": ["openid", "profile"], "id_token_alg": "RS256",
    }
    data.update(over)
    return data


def count_clients():
    from idp.models import Client
    from tongban.extensions import db

    return db.session.execute(select(func.count()).select_from(Client)).scalar()


def create_via_form(client, **over):
    resp = client.post("/admin/clients/new", data=register_form(client.csrf, **over))
    assert resp.status_code == 200, resp.get_data(as_text=True)[:2000]
    html = resp.get_data(as_text=True)
    client_id = re.search(r'<code class="credential">([^<]+)</code>', html).group(1)
    secret = re.search(r'<code class="credential secret">([^<]+)</code>', html).group(1)
    return client_id, secret, resp


# ---------------------------------------------------------------- access


def test_anonymous_is_sent_to_login(client):
    for path in ("/admin/clients", "/admin/users", "/admin/audit", "/admin/clients/new"):
        resp = client.get(path)
        assert resp.status_code == 302
        assert resp.headers["Location"] == f"/login?next={path}"


def test_citizen_and_other_org_admin_get_403(app, client, citizen):
    from people import accounts
    from tongban.extensions import db

    org = accounts.create_org("91350100M000100Y43", "某某有限公司")
    accounts.add_role(citizen, org, "admin")
    db.session.commit()
    login(client, CITIZEN_ID)
    for path in ("/admin/clients", "/admin/users", "/admin/audit", "/admin/clients/new"):
        assert client.get(path).status_code == 403, path


def test_auditor_reads_but_cannot_change(app, client, make_client):
    from people import accounts
    from tongban.extensions import db

    accounts.create_staff(OTHER_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "auditor")
    db.session.commit()
    client_id, _ = make_client(name="审计可见系统")
    csrf = login(client)
    assert "审计可见系统" in client.get("/admin/clients").get_data(as_text=True)
    detail = client.get(f"/admin/clients/{client_id}")
    assert detail.status_code == 200 and 'name="redirect_uris"' not in detail.get_data(as_text=True)
    assert client.get("/admin/audit").status_code == 200
    assert client.get("/admin/clients/new").status_code == 403
    assert client.get("/admin/users").status_code == 403
    assert client.post(f"/admin/clients/{client_id}/disable", data={"csrf_token": csrf}).status_code == 403
    assert client.post(f"/admin/clients/{client_id}", data=register_form(csrf)).status_code == 403
    assert token_request(client, client_id, _).status_code == 200  # still enabled


# ---------------------------------------------------------------- the register


def test_create_client_shows_secret_once_and_it_works(admin_client):
    page = admin_client.get("/admin/clients/new")
    assert page.status_code == 200 and 'value="client_credentials"' in page.get_data(as_text=True)
    client_id, secret, resp = create_via_form(admin_client)
    assert resp.headers["Cache-Control"] == "no-store"
    ok = token_request(admin_client, client_id, secret)
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["token_type"].lower() == "bearer"
    # the secret is never shown again
    for path in ("/admin/clients", f"/admin/clients/{client_id}"):
        html = admin_client.get(path).get_data(as_text=True)
        assert client_id in html and secret not in html
    from idp import clients as registry

    row = registry.get_row(client_id)
    assert row.approver == "市发展改革委" and row.approval_date.isoformat() == "2019-06-30"
    assert row.grant_types == ["authorization_code", "client_credentials"]
    assert row.redirect_uris == [REDIRECT]


def test_bad_redirect_uri_rerenders_and_creates_nothing(admin_client):
    before = count_clients()
    resp = admin_client.post("/admin/clients/new", data=register_form(
        admin_client.csrf, redirect_uris="http://bureau.example.gov.cn/callback"))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "must use https" in html and 'class="alert alert-error"' in html
    assert "不动产登记系统" in html  # the form keeps what was typed
    assert count_clients() == before


def test_form_without_csrf_creates_nothing(admin_client):
    before = count_clients()
    data = register_form("")
    assert admin_client.post("/admin/clients/new", data=data).status_code == 400
    assert count_clients() == before


def test_edit_client(admin_client, make_client):
    client_id, _ = make_client(name="旧名称", grant_types=["client_credentials"], redirect_uris=[])
    page = admin_client.get(f"/admin/clients/{client_id}")
    assert page.status_code == 200 and "旧名称" in page.get_data(as_text=True)
    resp = admin_client.post(f"/admin/clients/{client_id}", data=register_form(
        admin_client.csrf, name="新名称", grant_types=["client_credentials"], scopes=["openid", "phone"],
        redirect_uris="", first_party="y"))
    assert resp.status_code == 302 and resp.headers["Location"] == f"/admin/clients/{client_id}"
    from idp import clients as registry
    from tongban.audit import AuditLog
    from tongban.extensions import db

    db.session.expire_all()
    row = registry.get_row(client_id)
    assert row.name == "新名称" and row.scopes == ["openid", "phone"] and row.first_party
    assert row.funding_source == "市级财政"
    last = db.session.execute(select(AuditLog).where(AuditLog.action == "client.updated")).scalar_one()
    assert last.actor.startswith("user:") and "name" in last.detail
    # an invalid edit is refused and changes nothing
    bad = admin_client.post(f"/admin/clients/{client_id}", data=register_form(
        admin_client.csrf, name="再改", redirect_uris="http://evil.example.com/cb"))
    assert bad.status_code == 400 and "must use https" in bad.get_data(as_text=True)
    db.session.expire_all()
    assert registry.get_row(client_id).name == "新名称"


def test_public_client_gets_a_secret_when_made_confidential(admin_client):
    resp = admin_client.post("/admin/clients/new", data=register_form(
        admin_client.csrf, public_client="y", grant_types=["authorization_code"]))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'class="credential secret"' not in html
    client_id = re.search(r'<code class="credential">([^<]+)</code>', html).group(1)
    resp = admin_client.post(f"/admin/clients/{client_id}", data=register_form(
        admin_client.csrf, grant_types=["authorization_code", "client_credentials"]))
    assert resp.status_code == 200
    secret = re.search(r'<code class="credential secret">([^<]+)</code>', resp.get_data(as_text=True)).group(1)
    assert token_request(admin_client, client_id, secret).status_code == 200


def test_rotate_secret(admin_client, make_client):
    client_id, old = make_client()
    assert token_request(admin_client, client_id, old).status_code == 200
    confirm = admin_client.get(f"/admin/clients/{client_id}/rotate")
    assert confirm.status_code == 200
    resp = admin_client.post(f"/admin/clients/{client_id}/rotate", data={"csrf_token": admin_client.csrf})
    assert resp.status_code == 200
    new = re.search(r'<code class="credential secret">([^<]+)</code>', resp.get_data(as_text=True)).group(1)
    assert new != old
    refused = token_request(admin_client, client_id, old)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"
    assert token_request(admin_client, client_id, new).status_code == 200


def test_disable_and_enable(admin_client, make_client):
    client_id, secret = make_client()
    assert token_request(admin_client, client_id, secret).status_code == 200
    confirm = admin_client.get(f"/admin/clients/{client_id}/disable")
    assert confirm.status_code == 200 and 'method="post"' in confirm.get_data(as_text=True)
    assert token_request(admin_client, client_id, secret).status_code == 200  # a GET changes nothing
    resp = admin_client.post(f"/admin/clients/{client_id}/disable", data={"csrf_token": admin_client.csrf})
    assert resp.status_code == 302
    refused = token_request(admin_client, client_id, secret)
    assert refused.status_code in (400, 401) and refused.get_json()["error"] == "invalid_client"
    assert "flag-disabled" in admin_client.get(f"/admin/clients/{client_id}").get_data(as_text=True)
    admin_client.post(f"/admin/clients/{client_id}/enable", data={"csrf_token": admin_client.csrf})
    assert token_request(admin_client, client_id, secret).status_code == 200


def test_unknown_client_is_404(admin_client):
    assert admin_client.get("/admin/clients/tb_nope").status_code == 404


def test_dormant_filter(app, admin_client, make_client):
    from idp.models import ClientUsage
    from tongban.clock import utcnow
    from tongban.extensions import db

    now = utcnow()
    stale_id, _ = make_client(name="僵尸系统")
    busy_id, _ = make_client(name="活跃系统")
    with freeze_time(now - timedelta(days=200)):
        make_client(name="从未使用系统")  # registered long ago, never used
    db.session.add_all([
        ClientUsage(client_id=stale_id, day=(now - timedelta(days=120)).date(), logins=3, tokens=5,
                    last_used=now - timedelta(days=120)),
        ClientUsage(client_id=busy_id, day=(now - timedelta(days=1)).date(), logins=7, tokens=11,
                    last_used=now - timedelta(days=1)),
    ])
    db.session.commit()

    html = admin_client.get("/admin/clients").get_data(as_text=True)
    assert all(n in html for n in ("僵尸系统", "活跃系统", "从未使用系统"))
    assert html.count("flag-dormant") == 2

    only = admin_client.get("/admin/clients?dormant=1").get_data(as_text=True)
    assert "僵尸系统" in only and "从未使用系统" in only and "活跃系统" not in only

    longer = admin_client.get("/admin/clients?dormant=1&dormant_days=150").get_data(as_text=True)
    assert "从未使用系统" in longer and "僵尸系统" not in longer

    detail = admin_client.get(f"/admin/clients/{busy_id}").get_data(as_text=True)
    assert "flag-dormant" not in detail and ">7<" in detail and ">11<" in detail


# ---------------------------------------------------------------- accounts


def test_user_search_unlock_and_end_sessions(app, admin_client, citizen, client):
    from people import accounts
    from tongban.audit import AuditLog
    from tongban.extensions import db

    # the citizen logs in (one live session), then locks the account with wrong passwords
    other = browser(app)
    login(other, CITIZEN_ID)
    token = csrf_of(other.get("/login?force=1"))
    for _ in range(app.config["TONGBAN_LOCKOUT_THRESHOLD"]):
        other.post("/login", data={"csrf_token": token, "login": CITIZEN_ID, "password": "wrong-Passw0rd"})
    db.session.expire_all()
    assert accounts.lock_status(accounts.find_user_by_login(CITIZEN_ID)) is not None

    assert admin_client.get("/admin/users").status_code == 200
    found = admin_client.post("/admin/users", data={"csrf_token": admin_client.csrf, "login": "13800138000"})
    assert found.status_code == 302
    page = admin_client.get(found.headers["Location"])
    html = page.get_data(as_text=True)
    assert "张三" in html and "110***********002X" in html
    assert CITIZEN_ID not in html and "13800138000" not in html
    assert "flag-locked" in html

    sub = citizen.sub
    resp = admin_client.post(f"/admin/users/{sub}/unlock", data={"csrf_token": admin_client.csrf})
    assert resp.status_code == 302
    db.session.expire_all()
    user = accounts.find_user_by_login(CITIZEN_ID)
    assert user.locked_until is None and user.failed_logins == 0 and accounts.lock_status(user) is None
    assert "flag-unlocked" in admin_client.get(f"/admin/users/{sub}").get_data(as_text=True)

    assert other.get("/account").status_code == 200
    resp = admin_client.post(f"/admin/users/{sub}/end-sessions", data={"csrf_token": admin_client.csrf})
    assert resp.status_code == 302
    assert other.get("/account").status_code == 302  # logged out everywhere

    actions = set(db.session.execute(select(AuditLog.action)).scalars())
    assert {"admin.account_unlocked", "admin.sessions_ended", "admin.user_viewed"} <= actions

    missing = admin_client.post("/admin/users", data={"csrf_token": admin_client.csrf,
                                                      "login": "13900139000"})
    assert missing.status_code == 404


# ---------------------------------------------------------------- the audit log


def test_audit_page_and_verify(admin_client, make_client):
    make_client(name="审计系统")
    page = admin_client.get("/admin/audit")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "client.created" in html and "login.success" in html
    filtered = admin_client.get("/admin/audit?action=client.").get_data(as_text=True)
    assert "client.created" in filtered and "login.success" not in filtered
    verdict = admin_client.post("/admin/audit", data={"csrf_token": admin_client.csrf})
    assert verdict.status_code == 200 and "alert-success" in verdict.get_data(as_text=True)


def test_audit_page_shows_a_broken_chain(admin_client, make_client):
    from sqlalchemy import update

    from tongban.audit import AuditLog
    from tongban.extensions import db

    make_client(name="审计系统")
    target = db.session.execute(select(AuditLog.id).where(AuditLog.action == "client.created")).scalar_one()
    db.session.execute(update(AuditLog).where(AuditLog.id == target).values(outcome="failure"))
    db.session.commit()
    html = admin_client.post("/admin/audit", data={"csrf_token": admin_client.csrf}).get_data(as_text=True)
    assert "alert-error" in html and f'href="#entry-{target}"' in html
