"""Demo 好差评 data for ``flask demo seed``: three months of rated services in three departments,
bad ratings in every stage of handling, and a few recent services 张三 can still rate."""

from __future__ import annotations

import random
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from tongban.clock import utcnow
from tongban.extensions import db

from . import services
from .models import RatingEvent

DEMO_CLIENT = "demo-ratings"
DEPARTMENTS = [("11330800MB19572704", "通办市市场监督管理局"), ("11330800MB19572717", "通办市人力资源和社会保障局")]
ITEMS = {
    "11330800MB19572704": [("330800-XK-0001", "食品经营许可"), ("330800-DJ-0002", "企业设立登记")],
    "11330800MB19572717": [("330800-GG-0101", "社会保障卡申领"), ("330800-GG-0102", "失业保险金申领")],
}
COMMENTS = {5: ["一次就办好了，点赞", "窗口人员很耐心"], 4: ["整体不错", ""], 3: ["还可以，排队稍久", ""],
            2: ["材料要求没有一次说清楚，跑了两趟", "等了一个多小时"], 1: ["系统一直报错，窗口也说不清楚"]}
STEPS_NOTES = [("verify", "经核实，情况属实"), ("respond", "已电话联系办事群众说明情况并致歉"),
               ("rectify", "已在窗口张贴一次性告知单，并增加高峰时段窗口"), ("call_back", "回访群众，表示认可整改")]


def seed_demo(citizen, clerk) -> int:
    """Idempotent: does nothing once the demo events exist. Returns the number of events created.
    ``clerk`` is an administrator of the operating authority, so it may handle every department's cases."""
    from people.accounts import ensure_org

    if db.session.execute(select(RatingEvent.id).where(RatingEvent.client_id == DEMO_CLIENT).limit(1)).first():
        return 0
    cfg = current_app.config
    depts = [*DEPARTMENTS, (cfg["TONGBAN_AUTHORITY_USCC"], cfg["TONGBAN_AUTHORITY_NAME"])]
    items = {**ITEMS, cfg["TONGBAN_AUTHORITY_USCC"]: [("330800-QT-0301", "电子证照核发")]}
    for uscc, name in DEPARTMENTS:
        ensure_org(uscc, name)
    rng = random.Random(17)  # demo data: the same every time
    now = utcnow()
    period = timedelta(days=int(cfg["TONGBAN_RATING_PERIOD_DAYS"]))
    created = 0
    for i in range(72):
        uscc, dept_name = depts[i % len(depts)]
        code, item = rng.choice(items[uscc])
        channel = rng.choice(["window", "window", "online", "app", "kiosk", "phone"])
        recent = i >= 66  # the last few are fresh and left for 张三 to rate
        days_ago = rng.randint(0, 3) if recent else rng.randint(1, 88)
        at = now - timedelta(days=days_ago, hours=rng.randint(1, 8))
        who = {"sub": citizen.sub} if recent or i % 3 else {"id_number": "110101199003071233"}
        new = services.register_event(
            client_id=DEMO_CLIENT, department_name=dept_name, department_code=uscc, service_item_code=code,
            service_item_name=item, channel=channel, window=f"{rng.randint(1, 12):02d}号窗口" if channel == "window"
            else "", case_no=f"DEMO-{i:04d}", actor="demo", **who)
        new.event.handled_at, new.event.rate_until = at, at + period
        created += 1
        if recent:
            continue
        level = rng.choices([5, 4, 3, 2, 1], weights=[58, 22, 9, 7, 4])[0]
        reasons = (rng.sample(services.BAD_REASONS[:8], 1) if level <= services.BAD
                   else rng.sample(services.GOOD_REASONS, rng.randint(0, 2)))
        rated_at = at + timedelta(hours=rng.randint(1, 20))
        rater = citizen if "sub" in who else None
        rating = services.rate(new.event, level=level, reasons=reasons, comment=rng.choice(COMMENTS[level]),
                               rater=rater, link=None if rater else new.link, now=min(rated_at, now))
        if rating.case is None:
            continue
        _handle(rating.case, clerk, rng, rating.rated_at, now)
    return created


def _handle(case, clerk, rng, start, now) -> None:
    """Bring a demo case as far as its age allows: old ones closed, recent ones still open."""
    age = (now - start).days
    if age < 2:
        return
    if age > 40 and rng.random() < 0.15:
        services.case_step(case, "appeal", clerk, note="当日为系统故障，非窗口服务原因，申请复核", now=start)
        return
    steps = STEPS_NOTES if age > 10 else STEPS_NOTES[: rng.randint(1, 3)]
    at = start
    for step, note in steps:
        at = min(at + timedelta(days=rng.randint(1, 5 if age > 30 else 3)), now)
        services.case_step(case, step, clerk, note=note, answer="satisfied" if step == "call_back" else None,
                           now=at)
    if len(steps) == len(STEPS_NOTES):
        services.case_step(case, "close", clerk, now=min(at + timedelta(hours=2), now))
