"""Clerks act for their own department; issuing under the authority's seal needs a delegation."""

from __future__ import annotations

import re

import pytest

from licence import services
from licence.errors import NotDelegated
from tests.conftest import PASSWORD
from tests.licence.samples import SAMPLES
from tongban.extensions import db

DEPT_X, DEPT_Y = "11330800002724002N", "11330800002724012P"
CLERK_X, CLERK_Y, CLERK_AUTH = "11010519850202001X", "110105199003030031", "11010519750505005X"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def departments(app):
    from people import accounts

    accounts.ensure_org(DEPT_X, "通办市民政局")
    accounts.ensure_org(DEPT_Y, "通办市残疾人联合会")
    accounts.create_staff(CLERK_X, "民政窗口", PASSWORD, DEPT_X, "clerk")
    accounts.create_staff(CLERK_Y, "残联窗口", PASSWORD, DEPT_Y, "clerk")
    accounts.create_staff(CLERK_AUTH, "政数窗口", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "clerk")
    db.session.commit()


def _login(app, login):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    r = client.post("/login", data={"csrf_token": _CSRF.search(page).group(1), "login": login,
                                    "password": PASSWORD, "next": ""})
    assert r.status_code == 302
    return client


def _issue_form(client, t):
    page = client.get(f"/clerk/issue/{t.code}").get_data(as_text=True)
    (hid, hname), data = SAMPLES["结婚证"]
    form = {"csrf_token": _CSRF.search(page).group(1), "holder_id": hid, "holder_name": hname}
    form.update({f"f_{k}": v for k, v in data.items()})
    return form


def test_issuing_for_another_organisation_needs_a_delegation(app, departments):
    (hid, hname), data = SAMPLES["结婚证"]
    with pytest.raises(NotDelegated):
        services.issue("结婚证", hid, hname, data, department_uscc=DEPT_X, actor="t")
    db.session.rollback()
    services.delegate(DEPT_X, actor="t")
    lic = services.issue("结婚证", hid, hname, data, department_uscc=DEPT_X, actor="t")
    db.session.commit()
    assert lic.department_uscc == DEPT_X and lic.issuer_uscc == app.config["TONGBAN_AUTHORITY_USCC"]
    new = services.change(lic.identifier, {}, "t", reason="更正")
    db.session.commit()
    assert new.department_uscc == DEPT_X  # a change stays with the issuing department
    assert services.withdraw_delegation(DEPT_X, actor="t") == 1
    db.session.commit()
    with pytest.raises(NotDelegated):
        services.issue("结婚证", hid, hname, data, department_uscc=DEPT_X, actor="t")


def test_clerks_manage_only_their_departments_licences(app, citizen, departments):
    t = services.get_type("结婚证")
    # a department without its own licence seal and without a delegation cannot issue
    client = _login(app, CLERK_X)
    r = client.post(f"/clerk/issue/{t.code}", data=_issue_form(client, t))
    assert r.status_code == 403 and "授权" in r.get_data(as_text=True)
    assert db.session.query(services.Licence).count() == 0

    services.delegate(DEPT_X, actor="t")
    services.delegate(DEPT_Y, actor="t")
    db.session.commit()
    r = client.post(f"/clerk/issue/{t.code}", data=_issue_form(client, t))
    assert r.status_code == 302
    ident = r.headers["Location"].rsplit("/", 1)[1]
    lic = services.find(ident)
    assert lic.department_uscc == DEPT_X
    page = client.get(f"/clerk/licences/{ident}")
    assert page.status_code == 200 and lic.holder_id in page.get_data(as_text=True)
    assert ident in client.get("/clerk").get_data(as_text=True)

    # another department under the same (authority's) seal, and the authority's own clerk: no access
    for other in (CLERK_Y, CLERK_AUTH):
        client = _login(app, other)
        assert ident not in client.get("/clerk").get_data(as_text=True)
        page = client.get(f"/clerk/licences/{ident}")
        assert page.status_code == 403 and lic.holder_id not in page.get_data(as_text=True)
        csrf = _CSRF.search(client.get("/clerk/verify").get_data(as_text=True)).group(1)
        for action in ("suspend", "revoke", "change"):
            r = client.post(f"/clerk/licences/{ident}", data={"csrf_token": csrf, "action": action,
                                                              "reason": "越权", "confirm": "yes"})
            assert r.status_code == 403
        assert client.get(f"/clerk/licences/{ident}/pdf").status_code == 403
        db.session.expire_all()
        assert services.find(ident).status == "valid"

    client = _login(app, CLERK_X)
    csrf = _CSRF.search(client.get("/clerk/verify").get_data(as_text=True)).group(1)
    r = client.post(f"/clerk/licences/{ident}", data={"csrf_token": csrf, "action": "suspend", "reason": "核查",
                                                      "confirm": "yes"})
    assert r.status_code == 302
    db.session.expire_all()
    assert services.find(ident).status == "suspended"


def test_delegate_cli(app, departments):
    runner = app.test_cli_runner()
    r = runner.invoke(args=["licences", "delegate", DEPT_X])
    assert r.exit_code == 0 and DEPT_X in r.output and services.delegated_issuer(DEPT_X)
    (hid, hname), data = SAMPLES["结婚证"]
    r = runner.invoke(args=["licences", "issue", "--type", "结婚证", "--holder-id", hid, "--holder-name", hname,
                            "--department", DEPT_Y, *[f"--field={k}={v}" for k, v in data.items()]])
    assert r.exit_code == 1 and "delegation" in r.output
    r = runner.invoke(args=["licences", "delegate", DEPT_X, "--withdraw"])
    assert r.exit_code == 0 and services.delegated_issuer(DEPT_X) is None
    r = runner.invoke(args=["licences", "delegate", DEPT_X, "--withdraw"])
    assert r.exit_code == 1
    r = runner.invoke(args=["licences", "delegate", app.config["TONGBAN_AUTHORITY_USCC"]])
    assert r.exit_code == 1
