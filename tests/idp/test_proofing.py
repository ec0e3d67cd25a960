"""Identity proofing before power, tried as an attacker would (issue 10).

* An account that typed the legal representative's name and ID number (L1, password only)
  cannot claim the enterprise; neither can an L3 account without a second factor in the
  session, nor one with a factor but no identity check.
* The legitimate claim (L3 + SMS factor in the session) tells the register's contact phone,
  whose code disputes the claim; wrong codes change nothing and are throttled.
* A clerk of the operating authority, in a proven session, undoes a claim: legal
  representative, administrators and agents go, and every session acting on them ends.
* A clerk moves a squatted ID number to its owner: the squatter account is closed (sessions,
  refresh tokens, enterprise roles end), the owner logs in with it.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.conftest import CITIZEN_ID, OTHER_ID, PASSWORD, USCC
from tests.idp.helpers import _CSRF, Browser, discover, prove, proven_session
from tests.idp.test_enterprise import ENTERPRISE_NAME, _claim, _id_number, _post_form, _session, _sign_in
from tests.idp.test_oidc_authlib import RP

CONTACT = "13700137000"
CLERK_ID = _id_number(77)
OWNER_PASSWORD = "Owner-Passw0rd!2"


@pytest.fixture
def register(app):
    from people import enterprise
    from people.models import PopulationRecord
    from tongban.extensions import db

    enterprise.add_register_record(USCC, ENTERPRISE_NAME, CITIZEN_ID, "张三", CONTACT)
    db.session.add(PopulationRecord(id_number=CITIZEN_ID, name="张三"))
    db.session.commit()


@pytest.fixture
def clerk(app):
    from people import accounts
    from tongban.extensions import db

    user = accounts.create_staff(CLERK_ID, "王五", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"], "clerk",
                                 phone="13900139000")
    db.session.commit()
    return user


def _login(live_server, login: str, password: str = PASSWORD) -> Browser:
    b = Browser(live_server)
    assert b.login(login, password).status_code == 302
    return b


def _db():
    from tongban.extensions import db

    db.session.expire_all()
    return db.session


def _org():
    from people.models import Organisation

    return _db().query(Organisation).filter_by(uscc=USCC).one_or_none()


def _audits(action: str, outcome: str = "success"):
    from tongban.audit import AuditLog

    return _db().query(AuditLog).filter_by(action=action, outcome=outcome).all()


def _sms_to(phone: str, expect: int = 0) -> list[str]:
    """The texts sent to ``phone``; claim notices go out through the outbox after the commit, so
    deliver what is due (the worker thread may be doing it too) until ``expect`` arrived."""
    import time

    from people.mfa import SmsOutbox, outbox_text
    from tongban import outbox

    for _ in range(50):
        outbox.work_once()
        bodies = [outbox_text(r.body) for r in _db().query(SmsOutbox).filter_by(phone=phone).order_by(SmsOutbox.id)]
        if len(bodies) >= expect:
            return bodies
        time.sleep(0.1)
    return bodies


# ---------------------------------------------------------------- the attack


def test_squatter_typing_legal_reps_identity_cannot_claim(live_server, register):
    """The issue's attack: self-registered (L1, password only) with the legal representative's
    name and ID number, then /enterprise/claim. Refused, audited, nothing created."""
    from people import accounts

    squatter = accounts.create_user(CITIZEN_ID, "张三", PASSWORD)  # typed someone else's identity
    _db().commit()
    b = _login(live_server, CITIZEN_ID)
    home = b.http.get(f"{live_server}/enterprise/")
    assert 'id="proofing-required"' in home.text and "/mfa/verify?acr=L3" in home.text.replace("&amp;", "&")
    assert 'action="/enterprise/claim"' not in home.text
    resp = _force_claim(b)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/enterprise/#claim")
    assert _org() is None
    refused = _audits("enterprise.claim", "failure")
    assert refused and all("proofing_required" in r.detail for r in refused)
    assert _sms_to(CONTACT) == []

    # a second factor in the session is not enough without the identity check (L2 + SMS)
    prove(b, squatter, phone="13700137001", level=2)
    assert _force_claim(b).status_code == 303 and _org() is None
    # nor the identity check (L3) with a password-only session
    squatter.assurance_level = 3
    _db().merge(squatter)
    _db().commit()
    other = _login(live_server, CITIZEN_ID)
    assert _force_claim(other).status_code == 303 and _org() is None
    assert len(_audits("enterprise.claim", "failure")) == 3


def _force_claim(b: Browser):
    """The claim form is not shown to an unproven session; the attacker posts anyway (with a
    CSRF token from another page)."""
    csrf = _CSRF.search(b.http.get(b._abs("/enterprise/dispute")).text).group(1)
    return b.http.post(b._abs("/enterprise/claim"), data={"csrf_token": csrf, "uscc": USCC}, allow_redirects=False)


def test_service_refuses_someone_elses_proven_session(app, citizen, register):
    from people import accounts, enterprise
    from tongban.errors import Forbidden

    other = accounts.create_user(OTHER_ID, "李四", PASSWORD)
    with app.test_request_context():
        with pytest.raises(Forbidden) as e:
            enterprise.claim(citizen, USCC, proven_session(other))  # a proven session, of another account
        assert e.value.code == "proofing_required"
        with pytest.raises(Forbidden):
            enterprise.claim(citizen, USCC, None)
        app.config["TONGBAN_ENTERPRISE_CLAIM_ACR"] = "L4"  # not reachable online: nobody claims online
        try:
            with pytest.raises(Forbidden):
                enterprise.claim(citizen, USCC, proven_session(citizen))
        finally:
            app.config["TONGBAN_ENTERPRISE_CLAIM_ACR"] = "L3"
    assert _org() is None


def test_admins_must_be_identity_verified(app, citizen, register):
    from people import accounts, enterprise
    from tongban.errors import Forbidden

    l1 = accounts.create_user(OTHER_ID, "李四", PASSWORD)
    with app.test_request_context():
        org = enterprise.claim(citizen, USCC, proven_session(citizen))
        with pytest.raises(Forbidden) as e:
            enterprise.appoint_admin(citizen, org, l1.id_number, proven_session(citizen))
        assert e.value.code == "not_verified"


# ---------------------------------------------------------------- the legitimate path and the dispute


def _proven_claim(live_server, citizen) -> Browser:
    b = _login(live_server, CITIZEN_ID)
    prove(b, citizen)
    resp = _claim(b)
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/enterprise/{USCC}")
    return b


def test_claim_notifies_register_phone_and_can_be_disputed(app, live_server, citizen, register):
    from people.enterprise import EnterpriseClaim

    _proven_claim(live_server, citizen)
    org = _org()
    assert org is not None and org.legal_rep_id == citizen.id
    row = _db().query(EnterpriseClaim).one()
    assert row.state == "active" and row.acr == "L3" and "sms" in row.amr.split()
    assert row.notified_phone == "137****7000"
    [sms] = _sms_to(CONTACT, expect=1)
    assert ENTERPRISE_NAME in sms and "张*" in sms and "/enterprise/dispute" in sms
    code = re.search(r"\b([2-9A-Z]{10})\b", sms).group(1)
    # logs keep the phone masked
    notified = _audits("enterprise.claim_notified")
    assert notified and all(CONTACT not in (r.detail or "") for r in _audits("enterprise.claim") + notified)

    d = Browser(live_server)  # anyone holding the SMS: no account needed
    wrong = _post_form(d, "/enterprise/dispute", "/enterprise/dispute",
                       {"uscc": USCC, "code": "ABCDEFGHJK", "note": ""})
    assert wrong.status_code == 403
    assert _db().get(EnterpriseClaim, row.id).state == "active"
    bad_input = _post_form(d, "/enterprise/dispute", "/enterprise/dispute", {"uscc": "123", "code": code})
    assert bad_input.status_code == 400 and _db().get(EnterpriseClaim, row.id).state == "active"
    ok = _post_form(d, "/enterprise/dispute", "/enterprise/dispute",
                    {"uscc": USCC.lower(), "code": code.lower()[:5] + " " + code.lower()[5:], "note": "不是我们"})
    assert ok.status_code == 200 and 'id="disputed"' in ok.text
    row = _db().get(EnterpriseClaim, row.id)
    assert row.state == "disputed" and row.disputed_by == "sms_code" and row.dispute_note == "不是我们"
    assert _org().legal_rep_id == citizen.id  # in force until a clerk checks in person

    # guessing is throttled per enterprise
    app.config["TONGBAN_CLAIM_DISPUTE_RATE"] = 2
    try:
        statuses = [_post_form(d, "/enterprise/dispute", "/enterprise/dispute",
                               {"uscc": USCC, "code": f"ABCDEFGH{n}{n}"}).status_code for n in range(2, 5)]
    finally:
        app.config["TONGBAN_CLAIM_DISPUTE_RATE"] = 10
    assert statuses[-1] == 429


def test_others_wrong_codes_cannot_block_the_enterprises_dispute(app, citizen, register):
    """The reviewer's attack: anyone used up the per-enterprise tries with wrong codes and the
    enterprise holding the right code was refused. Now wrong codes are limited per source
    (an IPv6 /64 is one source) and a right code is never refused for others' tries."""
    from people import enterprise
    from people.enterprise import DisputeRefused, EnterpriseClaim
    from tongban.extensions import db

    with app.test_request_context():
        enterprise.claim(citizen, USCC, proven_session(citizen))
        db.session.commit()
    [sms] = _sms_to(CONTACT, expect=1)
    code = re.search(r"\b([2-9A-Z]{10})\b", sms).group(1)
    per_ip = app.config["TONGBAN_CLAIM_DISPUTE_RATE_PER_IP"]
    per_org = app.config["TONGBAN_CLAIM_DISPUTE_RATE"]

    def _try(code_, source):
        with app.test_request_context():
            try:
                enterprise.dispute_with_code(USCC, code_, source=source)
            except DisputeRefused as e:
                db.session.commit()
                return e.code
            db.session.commit()
            return "ok"

    # one attacker, rotating addresses in its /64: throttled after its own allowance
    tries = [_try(f"ABCDEFGH{n % 8 + 2}K", f"2001:db8:66:1::{n + 1:x}") for n in range(per_ip + 2)]
    assert tries == ["bad_code"] * per_ip + ["throttled"] * 2
    # many sources together use up the enterprise's wrong-code allowance
    for n in range(per_org):
        _try("ABCDEFGHJK", f"198.51.100.{n + 1}")
    assert _try("ABCDEFGHJK", "198.51.100.250") == "throttled"
    assert db.session.query(EnterpriseClaim).one().state == "active"
    # the enterprise's right code still goes through
    assert _try(code, "203.0.113.5") == "ok"
    db.session.expire_all()
    assert db.session.query(EnterpriseClaim).one().state == "disputed"


# ---------------------------------------------------------------- a clerk undoes a claim


def _acting(user, org, client_id: str, role: str, agent=None):
    """A live session of ``user`` acting for ``org`` at ``client_id`` (as the chooser records it)."""
    from people.enterprise import EnterpriseActing
    from tongban.clock import utcnow

    sess = proven_session(user)
    _db().add(EnterpriseActing(sid=sess.sid, client_id=client_id, org_id=org.id, role=role,
                               agent_id=agent.id if agent else None, chosen_at=utcnow()))
    _db().commit()
    return sess.sid


def test_clerk_undoes_claim_and_every_session_acting_on_it_ends(app, live_server, citizen, clerk, register,
                                                                 make_client):
    from people import accounts, enterprise
    from people.enterprise import AgentAuthorisation, EnterpriseAdmin, EnterpriseClaim
    from tongban.clock import utcnow

    scopes = ["openid", "profile", "enterprise", "offline_access"]
    x_id, x_secret = make_client(name="公积金系统", scopes=scopes)
    rep = _proven_claim(live_server, citizen)
    # the claimant signs in at a system acting as legal representative
    rp = RP(discover(live_server), x_id, x_secret, scope="openid profile enterprise")
    token, claims, _offered = _sign_in(rp, rep, CITIZEN_ID, f"legal_rep:{_org().id}")
    assert claims["org_role"] == "legal_rep" and claims["org_uscc"] == USCC
    rep_sid = claims["sid"]
    # ... appoints an administrator, who authorises an agent; both act for the enterprise
    admin = accounts.create_user(_id_number(78), "李四", PASSWORD)
    admin.assurance_level = 3
    agent = accounts.create_user(OTHER_ID, "赵六", PASSWORD)
    _db().commit()
    with app.test_request_context():
        org = _org()
        enterprise.appoint_admin(citizen, org, admin.id_number, proven_session(citizen))
        grant = enterprise.authorise_agent(admin, org, agent.id_number, [x_id], utcnow() - timedelta(minutes=1),
                                           utcnow() + timedelta(days=1), proven_session(admin))
        _db().commit()
    admin_sid = _acting(admin, org, x_id, "admin")
    agent_sid = _acting(agent, org, x_id, "agent", grant)
    claim_id = _db().query(EnterpriseClaim).one().id

    # not a clerk: 403; a clerk of the authority with a password-only session: step-up first
    assert rep.http.get(f"{live_server}/clerk/identity/", allow_redirects=False).status_code == 403
    c = _login(live_server, CLERK_ID)
    weak = c.http.get(f"{live_server}/clerk/identity/claims/{claim_id}", allow_redirects=False)
    assert weak.status_code == 302 and "/mfa/verify" in weak.headers["Location"]
    prove(c, clerk)
    page = c.http.get(f"{live_server}/clerk/identity/")
    assert page.status_code == 200 and f"/clerk/identity/claims/{claim_id}" in page.text
    # without the in-person confirmation nothing changes
    missing = _post_form(c, f"/clerk/identity/claims/{claim_id}", f"/clerk/identity/claims/{claim_id}/undo",
                         {"reason": "核验营业执照"})
    assert missing.status_code == 400 and _org().legal_rep_id == citizen.id
    done = _post_form(c, f"/clerk/identity/claims/{claim_id}", f"/clerk/identity/claims/{claim_id}/undo",
                      {"reason": "法定代表人本人到窗口核验，申领人非本人", "in_person": "y"})
    assert done.status_code == 303

    assert _org().legal_rep_id is None
    assert _db().query(EnterpriseAdmin).count() == 0
    assert _db().get(AgentAuthorisation, grant.id).withdrawn_at is not None
    for sid in (rep_sid, admin_sid, agent_sid):
        sess = _session(sid)
        assert sess.ended_at is not None, sid
    assert _session(rep_sid).end_reason == "enterprise_claim_undone"
    assert rp.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"]).status_code == 400
    row = _db().get(EnterpriseClaim, claim_id)
    assert row.state == "undone" and row.undone_by == f"user:{clerk.sub}"
    [undone] = _audits("enterprise.claim_undone")
    assert undone.actor == f"user:{clerk.sub}" and "法定代表人本人" in undone.detail
    # undoing twice is a clear conflict
    again = _post_form(c, "/clerk/identity/", f"/clerk/identity/claims/{claim_id}/undo",
                       {"reason": "again", "in_person": "y"})
    assert again.status_code in (409, 400)
    # the rep's page is gone
    assert rep.http.get(f"{live_server}/enterprise/{USCC}", allow_redirects=False).status_code in (302, 403)


def test_clerk_of_another_organisation_is_refused(app, live_server, citizen):
    from people import accounts

    accounts.create_org("91350100M000100Y43", "某公司")
    accounts.create_staff(CLERK_ID, "王五", PASSWORD, "91350100M000100Y43", "clerk")
    _db().commit()
    c = _login(live_server, CLERK_ID)
    assert c.http.get(f"{live_server}/clerk/identity/", allow_redirects=False).status_code == 403
    assert _audits("clerk.access_denied", "failure")


# ---------------------------------------------------------------- ID-number recovery


def test_clerk_moves_squatted_id_number_to_its_owner(app, live_server, clerk, register, make_client):
    from idp.models import RefreshToken
    from people import accounts
    from people.enterprise import EnterpriseClaim
    from people.models import User
    from tongban.errors import Conflict

    # the squatter registers with the owner's name and ID number; the population register
    # confirms the pair (L3), so with their own phone they even claim the enterprise
    squatter = accounts.create_user(CITIZEN_ID, "张三", PASSWORD, "13600136000")
    _db().commit()
    s = _proven_claim(live_server, squatter)
    assert _org().legal_rep_id == squatter.id
    x_id, x_secret = make_client(scopes=["openid", "profile", "offline_access"])
    rp = RP(discover(live_server), x_id, x_secret, scope="openid profile offline_access")
    step = s.walk(rp.auth_url(prompt="consent"))
    if step.kind == "consent":
        step = s.submit_consent(step)
    offline = rp.exchange(step.url)
    assert "refresh_token" in offline
    # the owner cannot register: the ID number is taken
    with app.test_request_context(), pytest.raises(Conflict):
        accounts.create_user(CITIZEN_ID, "张三", OWNER_PASSWORD)
    _db().rollback()

    c = _login(live_server, CLERK_ID)
    prove(c, clerk)
    form = {"id_number": CITIZEN_ID, "name": "张四", "phone": "13500135000", "password": OWNER_PASSWORD,
            "confirm": OWNER_PASSWORD, "reason": "本人持身份证到窗口，号码被他人注册", "in_person": "y"}
    # the name must match the population register; the in-person box must be ticked
    assert _post_form(c, "/clerk/identity/", "/clerk/identity/recover", form).status_code == 400
    assert _post_form(c, "/clerk/identity/", "/clerk/identity/recover",
                      {**form, "name": "张三", "in_person": ""}).status_code == 400
    assert _db().get(User, squatter.id).id_number == CITIZEN_ID and _audits("identity.recovered", "failure")
    done = _post_form(c, "/clerk/identity/", "/clerk/identity/recover", {**form, "name": "张三"})
    assert done.status_code == 303, done.text[:500]

    old = _db().get(User, squatter.id)
    assert old.id_number != CITIZEN_ID and old.disabled and old.assurance_level == 1 and old.phone is None
    assert _session_of(old).ended_at is not None
    assert all(r.revoked_at is not None for r in _db().query(RefreshToken).filter_by(user_id=old.id))
    assert rp.token_post(grant_type="refresh_token", refresh_token=offline["refresh_token"]).status_code == 400
    assert _org().legal_rep_id is None
    assert _db().query(EnterpriseClaim).one().state == "undone"
    # the squatter can no longer log in, with the ID number or with the tombstone
    assert Browser(live_server).login(CITIZEN_ID).status_code != 302
    assert Browser(live_server).login(old.id_number).status_code != 302
    assert s.http.get(f"{live_server}/enterprise/", allow_redirects=False).status_code == 302
    owner = _db().query(User).filter_by(id_number=CITIZEN_ID).one()
    assert owner.id != old.id and owner.assurance_level == 3 and owner.phone == "13500135000"
    [rec] = _audits("identity.recovered")
    assert rec.actor == f"user:{clerk.sub}" and rec.object == f"user:{owner.sub}" and old.sub in rec.detail
    assert CITIZEN_ID not in rec.detail
    told = _sms_to("13600136000", expect=2)[-1]  # after the step-up code
    desk = c.http.get(f"{live_server}/clerk/identity/").text
    assert 'id="recoveries"' in desk and old.sub in desk and "110***********002X" in desk
    assert "110***********002X" in told

    # the owner logs in with the ID number and, proven, claims the enterprise
    o = _login(live_server, CITIZEN_ID, OWNER_PASSWORD)
    prove(o, owner)
    assert _claim(o).status_code == 303 and _org().legal_rep_id == owner.id
    # a second recovery cannot take it back from the owner who got it in person
    again = _post_form(c, "/clerk/identity/", "/clerk/identity/recover", {**form, "name": "张三"})
    assert again.status_code == 409 and not _db().get(User, owner.id).disabled


def _session_of(user):
    from people.models import LoginSession

    rows = _db().query(LoginSession).filter_by(user_id=user.id).all()
    assert rows
    return max(rows, key=lambda r: r.id)


def test_recover_cli(app, clerk, register):
    from people import accounts
    from people.models import User

    squatter = accounts.create_user(CITIZEN_ID, "张三", PASSWORD)
    _db().commit()
    runner = app.test_cli_runner()
    base = ["identity", "recover", CITIZEN_ID, "--name", "张三", "--reason", "窗口核验", "--password-stdin"]
    refused = runner.invoke(args=[*base, "--clerk", OTHER_ID], input=OWNER_PASSWORD + "\n")
    assert refused.exit_code == 1 and refused.output.strip().count("\n") == 0 and "error:" in refused.output
    assert _db().get(User, squatter.id).id_number == CITIZEN_ID
    ok = runner.invoke(args=[*base, "--clerk", CLERK_ID, "--json"], input=OWNER_PASSWORD + "\n")
    assert ok.exit_code == 0, ok.output
    assert _db().get(User, squatter.id).disabled
    owner = _db().query(User).filter_by(id_number=CITIZEN_ID).one()
    assert owner.sub in ok.output and owner.assurance_level == 3


def test_claims_cli(app, citizen, register):
    from people import enterprise

    with app.test_request_context():
        enterprise.claim(citizen, USCC, proven_session(citizen))
        _db().commit()
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["enterprises", "claims", "--json"])
    assert listed.exit_code == 0 and USCC in listed.output
    claim_id = __import__("json").loads(listed.output)[0]["id"]
    no_reason = runner.invoke(args=["enterprises", "undo-claim", str(claim_id), "--reason", " "])
    assert no_reason.exit_code == 1 and _org().legal_rep_id == citizen.id
    assert runner.invoke(args=["enterprises", "dispute", str(claim_id), "--note", "到窗口申诉"]).exit_code == 0
    undone = runner.invoke(args=["enterprises", "undo-claim", str(claim_id), "--reason", "核验"])
    assert undone.exit_code == 0 and _org().legal_rep_id is None
    assert runner.invoke(args=["enterprises", "undo-claim", "999"]).exit_code != 0


def test_phished_password_alone_gives_no_power(live_server, citizen, register, make_client):
    """The legal representative's password, without their second factor, appoints no
    administrator and authorises no agent."""
    from idp.enterprise_views import _LOCAL_FORMAT, _to_local
    from people import accounts
    from people.enterprise import AgentAuthorisation, EnterpriseAdmin
    from tongban.clock import utcnow

    x_id, _secret = make_client(scopes=["openid", "enterprise"])
    _proven_claim(live_server, citizen)
    accomplice = accounts.create_user(OTHER_ID, "赵六", PASSWORD)
    accomplice.assurance_level = 3
    _db().commit()
    thief = _login(live_server, CITIZEN_ID)  # password only
    page = thief.http.get(f"{live_server}/enterprise/{USCC}")
    assert page.status_code == 200 and 'id="proofing-required"' in page.text
    start = _to_local(utcnow())
    agent = _post_form(thief, f"/enterprise/{USCC}", f"/enterprise/{USCC}/agents", {
        "id_number": OTHER_ID, "systems": [x_id], "valid_from": start.strftime(_LOCAL_FORMAT),
        "valid_until": (start + timedelta(days=30)).strftime(_LOCAL_FORMAT)})
    admin = _post_form(thief, f"/enterprise/{USCC}", f"/enterprise/{USCC}/admins", {"id_number": OTHER_ID})
    assert agent.status_code == admin.status_code == 303
    assert _db().query(AgentAuthorisation).count() == 0 and _db().query(EnterpriseAdmin).count() == 0
    assert _audits("enterprise.agent_authorised", "failure") and _audits("enterprise.admin_appointed", "failure")


def test_claim_notice_goes_through_the_configured_sms_sender(app, citizen, register):
    """A deployment's SMS gateway (``app.extensions["tongban.sms_sender"]``) gets the notice, after
    the commit; nothing is sent for a refused claim."""
    from people import enterprise
    from tongban import outbox
    from tongban.errors import Forbidden

    sent: list[tuple[str, str]] = []

    class Gateway:
        def send(self, phone: str, text: str) -> None:
            sent.append((phone, text))

    app.extensions["tongban.sms_sender"] = Gateway()
    try:
        with app.test_request_context():
            with pytest.raises(Forbidden):
                enterprise.claim(citizen, USCC, None)
            _db().rollback()
            enterprise.claim(citizen, USCC, proven_session(citizen))
            assert sent == []  # not before the commit
            _db().commit()
        for _ in range(50):
            outbox.work_once()
            if sent:
                break
            __import__("time").sleep(0.1)
    finally:
        app.extensions.pop("tongban.sms_sender", None)
    assert len(sent) == 1 and sent[0][0] == CONTACT and ENTERPRISE_NAME in sent[0][1]
