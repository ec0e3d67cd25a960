"""Bad-rating cases (steps, permissions, appeals, escalation), working days, figures, the pages,
the report command and the GB/T 39735 export."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import CITIZEN_ID
from tests.flask_flows import csrf_token
from tests.rating.conftest import CLERK_ID, DEPT, OTHER_CLERK_ID, OTHER_DEPT, bearer
from tongban.extensions import db


def _audit(action: str) -> int:
    from tongban.audit import AuditLog

    return db.session.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == action))


@pytest.fixture
def bad_case(app, citizen, new_event):
    """A 非常不满意 rating of 张三 for the department, and its case."""
    from rating import services

    new = new_event(sub=citizen.sub)
    r = services.rate(new.event, level=1, reasons=["103"], comment="跑了三次 11010519491231002X", rater=citizen)
    db.session.commit()
    return r.case


def test_department_handles_its_case_step_by_step(app, bad_case, dept_clerk, logged_in):
    from rating import services
    from rating.errors import BadCaseStep, InvalidRating, NotCaseHandler

    clerk, other = dept_clerk
    c = bad_case
    assert c.state == "open" and c.department_code == DEPT and c.due_at > c.verify_due > c.created_at
    # another department's clerk can neither act nor look
    with pytest.raises(NotCaseHandler):
        services.case_step(c, "verify", other, note="不是我们的")
    intruder = logged_in(OTHER_CLERK_ID)
    assert intruder.get(f"/ratings/cases/{c.id}").status_code == 403
    assert f"/ratings/cases/{c.id}" not in intruder.get("/ratings/cases").get_data(as_text=True)
    # steps only in order, each with its text
    with pytest.raises(BadCaseStep):
        services.case_step(c, "close", clerk)
    with pytest.raises(InvalidRating):
        services.case_step(c, "verify", clerk, note="  ")
    db.session.rollback()

    b = logged_in(CLERK_ID)
    listing = b.get("/ratings/cases").get_data(as_text=True)
    assert f"/ratings/cases/{c.id}" in listing
    page = b.get(f"/ratings/cases/{c.id}").get_data(as_text=True)
    assert "11010519491231002X" not in page and "110***********002X" in page  # masked in the comment
    token = csrf_token(b, f"/ratings/cases/{c.id}")
    steps = [("verify", {"note": "核实：材料清单未一次性告知"}), ("respond", {"note": "已致电说明并致歉"}),
             ("rectify", {"note": "窗口增设一次性告知单"}),
             ("call_back", {"note": "群众表示认可", "answer": "satisfied"}), ("close", {})]
    for step, extra in steps:
        r = b.post(f"/ratings/cases/{c.id}", data={"csrf_token": token, "step": step, **extra})
        assert r.status_code == 303
        db.session.expire_all()
        assert c.state == services.STEPS[step][1], (step, c.state)
    assert c.callback_answer == "satisfied" and c.closed_at is not None
    for step, _ in steps:
        assert _audit(f"rating.case_{step}") == 1
    # a replayed step does nothing
    r = b.post(f"/ratings/cases/{c.id}", data={"csrf_token": token, "step": "verify", "note": "again"})
    db.session.expire_all()
    assert r.status_code == 303 and c.state == "closed" and _audit("rating.case_verify") == 1
    # without CSRF nothing happens
    assert b.post(f"/ratings/cases/{c.id}", data={"step": "appeal", "note": "x"}).status_code == 400


def test_appeal_is_decided_by_the_authority_not_the_department(app, bad_case, dept_clerk, supervisor):
    from rating import services
    from rating.errors import BadCaseStep, NotCaseHandler

    clerk, _other = dept_clerk
    c = bad_case
    services.case_step(c, "appeal", clerk, note="当日系统故障，非窗口原因")
    db.session.commit()
    assert c.state == "appealed" and c.appeal_from == "open"
    with pytest.raises(NotCaseHandler):
        services.decide_appeal(c, clerk, uphold=True, note="我批准我自己")
    with pytest.raises(BadCaseStep):
        services.case_step(c, "verify", clerk, note="x")
    db.session.rollback()
    assert services.figures(None)[0]["bad"] == 1
    services.decide_appeal(c, supervisor, uphold=True, note="经核实属系统故障")
    db.session.commit()
    assert c.state == "upheld" and c.rating.invalidated and _audit("rating.appeal_decided") == 1
    # an upheld appeal takes the rating out of every figure
    total = services.figures(None)[0]
    assert total["ratings"] == 0 and total["bad"] == 0


def test_rejected_appeal_resumes_and_cannot_be_repeated(app, bad_case, dept_clerk, supervisor):
    from rating import services
    from rating.errors import BadCaseStep, NotCaseHandler

    clerk, _ = dept_clerk
    c = bad_case
    services.case_step(c, "verify", clerk, note="属实")
    services.case_step(c, "appeal", clerk, note="不认可")
    db.session.commit()
    # whoever appealed cannot decide it, even as an authority administrator
    from people import accounts

    authority = db.session.scalar(select(accounts.Organisation).where(
        accounts.Organisation.uscc == app.config["TONGBAN_AUTHORITY_USCC"]))
    accounts.add_role(clerk, authority, "admin")
    db.session.commit()
    with pytest.raises(NotCaseHandler):
        services.decide_appeal(c, clerk, uphold=True, note="自己批")
    db.session.rollback()
    services.decide_appeal(c, supervisor, uphold=False, note="理由不成立")
    db.session.commit()
    assert c.state == "verified" and c.appeal_decision == "rejected" and not c.rating.invalidated
    with pytest.raises(BadCaseStep):
        services.case_step(c, "appeal", clerk, note="再诉")


def test_working_days_skip_weekends_and_holidays(app):
    from rating.services import CST, add_working_days

    friday = datetime(2026, 12, 4, 10, 0) - CST  # Friday 10:00 in Beijing
    assert add_working_days(friday, 1) == datetime(2026, 12, 7, 10, 0) - CST  # Monday
    assert add_working_days(friday, 5) == datetime(2026, 12, 11, 10, 0) - CST
    app.config["TONGBAN_RATING_HOLIDAYS"] = ["2026-12-07"]
    app.config["TONGBAN_RATING_MAKEUP_WORKDAYS"] = ["2026-12-05"]
    try:
        assert add_working_days(friday, 1) == datetime(2026, 12, 5, 10, 0) - CST  # make-up Saturday
        assert add_working_days(friday, 2) == datetime(2026, 12, 8, 10, 0) - CST  # holiday Monday skipped
    finally:
        app.config["TONGBAN_RATING_HOLIDAYS"] = []
        app.config["TONGBAN_RATING_MAKEUP_WORKDAYS"] = []


def test_overdue_cases_escalate_once_per_level(app, bad_case, dept_clerk):
    from rating import services

    c = bad_case
    assert services.escalate_overdue() == 0
    late_verify = c.verify_due + timedelta(minutes=1)
    assert services.escalate_overdue(now=late_verify) == 1
    db.session.commit()
    assert c.escalation_level == 1 and services.escalate_overdue(now=late_verify) == 0
    late = c.due_at + timedelta(minutes=1)
    assert services.escalate_overdue(now=late) == 1
    db.session.commit()
    assert c.escalation_level == 2 and services.escalate_overdue(now=late + timedelta(days=9)) == 0
    assert _audit("rating.case_escalated") == 2
    # the command does the same and says how many
    r = app.test_cli_runner().invoke(args=["ratings", "escalate"])
    assert r.exit_code == 0 and "0 case(s) escalated" in r.output


def _seed_figures(new_event, citizen):
    from rating import services

    out = []
    for level, dept, channel in [(5, DEPT, "window"), (4, DEPT, "online"), (2, DEPT, "window"),
                                 (3, OTHER_DEPT, "app")]:
        name = "市市场监督管理局" if dept == DEPT else "市人力资源和社会保障局"
        new = new_event(sub=citizen.sub, department_code=dept, department_name=name, channel=channel)
        out.append(services.rate(new.event, level=level, reasons=["105"] if level <= 2 else [], rater=citizen))
    db.session.commit()
    return out


def test_figures_report_and_export(app, citizen, new_event, make_client, client):
    from rating import services

    rows = _seed_figures(new_event, citizen)
    month = rows[0].month
    total = services.figures(None, month)[0]
    assert (total["ratings"], total["satisfied"], total["bad"], total["satisfaction_rate"]) == (4, 3, 1, 75.0)
    assert total["logged_in"] == 4 and total["levels"] == {"5": 1, "4": 1, "3": 1, "2": 1, "1": 0}
    by_dept = {r["key"]: r for r in services.figures("department", month)}
    assert by_dept[DEPT]["ratings"] == 3 and by_dept[DEPT]["bad"] == 1 and by_dept[OTHER_DEPT]["bad"] == 0
    by_channel = {r["key"]: r["ratings"] for r in services.figures("channel", month)}
    assert by_channel == {"01": 2, "02": 1, "03": 1}

    runner = app.test_cli_runner()
    r = runner.invoke(args=["ratings", "report", "--month", month, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["totals"]["ratings"] == 4 and len(data["by_department"]) == 2 and data["month"] == month
    r = runner.invoke(args=["ratings", "report", "--month", "2026-13"])
    assert r.exit_code == 1 and r.output.strip().count("\n") == 0 and "YYYY-MM" in r.output

    r = runner.invoke(args=["ratings", "export", "--month", month])
    assert r.exit_code == 0
    records = json.loads(r.output)["records"]
    bad = next(x for x in records if x["level"] == 2)
    for item in ("evaluation_id", "service_item_code", "service_item_name", "department_code",
                 "department_name", "channel_code", "level", "reasons", "comment", "evaluator", "handled_at",
                 "evaluated_at", "rectification"):
        assert item in bad
    assert bad["level_name"] == "不满意" and bad["channel_name"] == "窗口" and bad["evaluator"] == "张*"
    assert bad["rectification"]["state"] == "open"

    # the national platform's export over the API needs the restricted rating:export scope
    cid, secret = make_client(scopes=["rating:export"], grant_types=["client_credentials"])
    auth = bearer(client, cid, secret, "rating:export")
    r = client.get(f"/api/v1/ratings/export?month={month}", headers=auth)
    assert r.status_code == 200 and len(r.json["records"]) == 4
    assert client.get("/api/v1/ratings/export?month=12-2026", headers=auth).status_code == 400
    assert client.get("/api/v1/ratings/export", headers=auth).status_code == 400
    assert _audit("rating.exported") == 2


def test_public_page_shows_figures_and_handled_bad_ratings_masked(app, citizen, new_event, dept_clerk, browser):
    from rating import services

    clerk, _ = dept_clerk
    rows = _seed_figures(new_event, citizen)
    bad = next(r for r in rows if r.level == 2)
    bad.comment = "请联系我 13800138000"
    for step, note in [("verify", "属实"), ("respond", "已答复"), ("rectify", "已整改：增加窗口"),
                       ("call_back", "满意")]:
        services.case_step(bad.case, step, clerk, note=note, answer="satisfied" if step == "call_back" else None)
    db.session.commit()
    page = browser().get(f"/ratings?month={rows[0].month}").get_data(as_text=True)
    assert "75.0%" in page and "已整改：增加窗口" not in page  # not yet closed: not in the handled list
    services.case_step(bad.case, "close", clerk)
    db.session.commit()
    anon = browser()
    r = anon.get(f"/ratings?month={rows[0].month}")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "已整改：增加窗口" in page and "市市场监督管理局" in page
    assert "张*" in page and "张三" not in page and "13800138000" not in page and CITIZEN_ID not in page
    assert "赵六" not in page  # no staff names in public
    assert "<script" not in page
    assert anon.get("/ratings?month=garbage").status_code == 400


def test_dashboard_for_authority_staff_only(app, citizen, new_event, supervisor, logged_in):
    rows = _seed_figures(new_event, citizen)
    month = rows[0].month
    assert logged_in(CITIZEN_ID).get("/admin/ratings").status_code == 403
    b = logged_in("330802199001010037")
    for by in ("department", "item", "channel"):
        r = b.get(f"/admin/ratings?month={month}&by={by}")
        assert r.status_code == 200 and "75.0%" in r.get_data(as_text=True)
    r = b.get(f"/admin/ratings/export.json?month={month}")
    assert r.status_code == 200 and len(json.loads(r.data)["records"]) == 4
    assert b.get("/ratings/cases").status_code == 200  # the authority sees every department's cases


def test_openapi_lists_the_rating_api(client):
    doc = client.get("/api/v1/openapi.json").json
    assert {"/api/v1/ratings/events", "/api/v1/ratings/events/{event_id}", "/api/v1/ratings/export"} <= set(
        doc["paths"])
    assert "rating:write" in doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]["scopes"]
    assert "RatingEvent" in doc["components"]["schemas"]


def test_no_escalation_while_the_authority_considers_an_appeal(app, bad_case, dept_clerk):
    from rating import services

    clerk, _ = dept_clerk
    c = bad_case
    services.case_step(c, "appeal", clerk, note="非本部门原因")
    db.session.commit()
    late = c.due_at + timedelta(days=1)
    assert services.escalate_overdue(now=late) == 0 and not services.overdue(c, now=late)
    services.escalation_chore()  # what the worker thread runs hourly
    assert c.escalation_level == 0 and _audit("rating.case_escalated") == 0


def test_rating_page_in_english_and_for_the_owner(app, citizen, new_event, logged_in):
    new = new_event(sub=citizen.sub)
    me = logged_in(CITIZEN_ID)
    me.set_cookie("lang", "en")
    page = me.get(f"/r/{new.link}").get_data(as_text=True)
    assert "Rate this service" in page and "Very dissatisfied" in page
    me.set_cookie("lang", "zh_CN")
    page = me.get(f"/r/{new.link}").get_data(as_text=True)
    assert "评价本次服务" in page and "非常不满意" in page and "排队等候时间长" in page


def test_demo_seed_gives_the_dashboard_real_figures(app, citizen, supervisor):
    from people import accounts
    from rating import services
    from rating.demo import seed_demo
    from rating.models import RatingEvent

    clerk = accounts.create_staff("330802198501010012", "赵六", "Test-Passw0rd!",
                                  app.config["TONGBAN_AUTHORITY_USCC"], "admin")
    created = seed_demo(citizen, clerk)
    db.session.commit()
    assert created > 50 and seed_demo(citizen, clerk) == 0  # idempotent
    report = services.report()
    assert report["totals"]["ratings"] > 40 and report["totals"]["bad"] >= 1
    assert len(report["by_department"]) == 3 and len(report["by_month"]) >= 2
    states = {c.state for c in services.cases_for_reader("all")}
    assert "closed" in states
    # some recent services are left for the demo citizen to rate
    assert any(services.rateable(e) for e in services.events_of(citizen))
    assert db.session.scalar(select(func.count()).select_from(RatingEvent)) == created
