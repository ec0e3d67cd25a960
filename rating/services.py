"""好差评 operations: service events, ratings, bad-rating cases, escalation and figures.

No Flask request in here: views pass the user, the one-time link and the form values.
Every operation flushes; the request (or CLI command) commits once. One rating per
event is enforced by a unique index, a one-time link by a single conditional UPDATE,
and every case step by an UPDATE guarded on the state it leaves, so two clicks or two
workers can never both succeed.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from hashlib import sha256

from flask import current_app, has_request_context
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from tongban import audit
from tongban.clock import digest, token, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db
from tongban.i18n import localised
from tongban.identifiers import parse_id_number, validate_uscc
from tongban.masking import mask_name, mask_number, mask_text

from .errors import (
    AlreadyRated,
    BadCaseStep,
    CaseNotFound,
    DepartmentMismatch,
    DuplicateEvent,
    EventNotFound,
    InvalidEvent,
    InvalidMonth,
    InvalidRating,
    LinkInvalid,
    NotCaseHandler,
    NotYourEvent,
    RatingClosed,
    UnknownCitizen,
)
from .models import Rating, RatingCase, RatingEvent

# GB/T 39735 评价等级: 5 levels, 1 the worst
LEVELS = {
    5: _l("Very satisfied"),
    4: _l("Satisfied"),
    3: _l("Fairly satisfied"),
    2: _l("Dissatisfied"),
    1: _l("Very dissatisfied"),
}
LEVELS_ZH = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
BAD = 2  # levels at or below open a case and need a reason
SATISFIED = 3  # levels at or above count as satisfied (满意率)

# 评价渠道 (GB/T 39735 channels; codes as the national platform numbers them)
CHANNELS = {
    "01": _l("Service hall window"),
    "02": _l("Online (PC)"),
    "03": _l("Mobile app"),
    "04": _l("Self-service kiosk"),
    "05": _l("Service hotline"),
}
CHANNELS_ZH = {"01": "窗口", "02": "网上", "03": "移动端", "04": "自助终端", "05": "电话"}
CHANNEL_ALIASES = {"window": "01", "online": "02", "app": "03", "kiosk": "04", "phone": "05"}

# 评价理由: the standard reason list; 1xx for bad ratings (one required at 不满意 and below),
# 2xx for good ones
REASONS = {
    "101": _l("Service guide unclear or inaccurate"),
    "102": _l("Too many or repeated documents required"),
    "103": _l("Took too long or overran the time limit"),
    "104": _l("Had to come back several times"),
    "105": _l("Staff attitude was poor"),
    "106": _l("Staff did not know the procedure or did not explain everything at once"),
    "107": _l("The online or self-service system was hard to use"),
    "108": _l("Long wait in the queue"),
    "109": _l("Fees were not as published"),
    "199": _l("Other problem"),
    "201": _l("Quick and efficient"),
    "202": _l("Friendly and helpful staff"),
    "203": _l("Few documents needed"),
    "204": _l("Done in one visit"),
    "205": _l("Easy to use online"),
}
REASONS_ZH = {
    "101": "办事指南不清晰或不准确", "102": "要求提交材料过多或重复提交", "103": "办理时间长或超时办理",
    "104": "多次跑动", "105": "工作人员服务态度差", "106": "业务不熟练或未一次性告知",
    "107": "网上或自助系统不好用", "108": "排队等候时间长", "109": "收费不规范", "199": "其他问题",
    "201": "办事效率高", "202": "服务态度好", "203": "材料精简", "204": "一次办好", "205": "网上办理方便",
}
BAD_REASONS = tuple(c for c in REASONS if c.startswith("1"))
GOOD_REASONS = tuple(c for c in REASONS if c.startswith("2"))

# the case workflow: step -> (states it may leave, state it enters)
STEPS = {
    "verify": (("open",), "verified"),
    "respond": (("verified",), "responded"),
    "rectify": (("responded",), "rectified"),
    "call_back": (("rectified",), "called_back"),
    "close": (("called_back",), "closed"),
    "appeal": (("open", "verified"), "appealed"),
}
STEP_FIELDS = {"verify": ("verified_at", "verify_note"), "respond": ("responded_at", "response"),
               "rectify": ("rectified_at", "rectification"), "call_back": ("called_back_at", "callback_note"),
               "close": ("closed_at", None), "appeal": ("appealed_at", "appeal_reason")}
CASE_STATES = {
    "open": _l("Awaiting verification"), "verified": _l("Verified"), "responded": _l("Responded"),
    "rectified": _l("Rectified"), "called_back": _l("Called back"), "closed": _l("Closed"),
    "appealed": _l("Appealed"), "upheld": _l("Appeal upheld"),
}
TERMINAL = ("closed", "upheld")
# no deadline runs while the authority considers an appeal: the department waits on it
NOT_RUNNING = (*TERMINAL, "appealed")
CALLBACK_ANSWERS = {"satisfied": _l("Satisfied with the handling"),
                    "unsatisfied": _l("Still dissatisfied"), "unreachable": _l("Could not be reached")}
HANDLER_ROLES = ("clerk", "admin")
MAX_COMMENT = 500
MAX_NOTE = 2000
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CST = timedelta(hours=8)  # China Standard Time, no daylight saving


# ---------------------------------------------------------------- small helpers


def _text(value, name: str, limit: int, *, required: bool = False, error=InvalidEvent) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise error(f"{name} must be a string")
    value = value.strip()
    if required and not value:
        raise error(f"{name} is required")
    if len(value) > limit:
        raise error(f"{name} is longer than {limit} characters")
    if _CONTROL.search(value):
        raise error(f"{name} contains control characters")
    return value


def month_of(at: datetime) -> str:
    return (at + CST).strftime("%Y-%m")


def check_month(month: str | None) -> str | None:
    if month in (None, ""):
        return None
    if not isinstance(month, str) or not _MONTH.match(month):
        raise InvalidMonth("month must be YYYY-MM")
    return month


def citizen_key(id_number: str) -> str:
    """A keyed hash of an ID number: finds a window citizen's events without storing the number."""
    kek = current_app.config["TONGBAN_KEK"]
    return hmac.new(kek, b"rating-citizen:" + id_number.upper().encode(), sha256).hexdigest()


def rating_url(raw: str) -> str:
    return f"{current_app.config['TONGBAN_ISSUER']}/r/{raw}"


def channel_name(code: str) -> str:
    """In the page's language on a page; Chinese (the data's language) in the CLI and exports."""
    if code not in CHANNELS:
        return code
    return str(CHANNELS[code]) if has_request_context() else CHANNELS_ZH[code]


def channel_code(value) -> str:
    raw = _text(value, "channel", 20, required=True).lower()
    code = CHANNEL_ALIASES.get(raw, raw)
    if code not in CHANNELS:
        raise InvalidEvent(f"channel must be one of {', '.join([*CHANNELS, *CHANNEL_ALIASES])}")
    return code


# ---------------------------------------------------------------- working days


def _is_working_day(day: date) -> bool:
    cfg = current_app.config
    iso = day.isoformat()
    if iso in set(cfg.get("TONGBAN_RATING_MAKEUP_WORKDAYS") or ()):
        return True
    if iso in set(cfg.get("TONGBAN_RATING_HOLIDAYS") or ()):
        return False
    return day.weekday() < 5


def add_working_days(start: datetime, days: int) -> datetime:
    """``start`` (naive UTC) plus ``days`` working days in China: weekends and the configured
    holidays (TONGBAN_RATING_HOLIDAYS) skipped, make-up working days (调休) counted."""
    local = start + CST
    counted = 0
    while counted < days:
        local += timedelta(days=1)
        if _is_working_day(local.date()):
            counted += 1
    return local - CST


# ---------------------------------------------------------------- service events


@dataclass(frozen=True)
class NewEvent:
    event: RatingEvent
    link: str  # the raw one-time link token (shown once; only its digest is stored)

    @property
    def url(self) -> str:
        return rating_url(self.link)


def _parse_handled_at(value, now: datetime) -> datetime:
    if value in (None, ""):
        return now
    if isinstance(value, datetime):
        at = value
    else:
        raw = _text(value, "handled_at", 40)
        try:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent("handled_at must be an ISO 8601 date-time") from None
    # without an offset the time is Beijing time
    at = (at - at.utcoffset()).replace(tzinfo=None) if at.tzinfo is not None else at - CST
    if at > now + timedelta(minutes=5):
        raise InvalidEvent("handled_at is in the future")
    if at < now - timedelta(days=int(current_app.config["TONGBAN_RATING_PERIOD_DAYS"])):
        raise InvalidEvent("handled_at is older than the rating period")
    return at


def register_event(*, client_id: str, department_name: str, department_code, service_item_code,
                   service_item_name, channel, sub=None, id_number=None, handled_at=None, window=None,
                   staff=None, case_no=None, actor: str = "") -> NewEvent:
    """Record a completed service and mint its one-time rating link."""
    from people.accounts import get_user_by_sub
    from people.models import User

    now = utcnow()
    try:
        dept = validate_uscc(_text(department_code, "department_code", 18, required=True))
    except ValidationError as e:
        raise InvalidEvent(f"department_code: {e.message}") from None
    dept_name = _text(department_name, "department_name", 200, required=True)
    item = _text(service_item_code, "service_item_code", 64, required=True)
    item_name = _text(service_item_name, "service_item_name", 200, required=True)
    chan = channel_code(channel)
    at = _parse_handled_at(handled_at, now)
    case_no = _text(case_no, "case_no", 100) or None
    user, key, masked = None, None, ""
    if sub not in (None, ""):
        user = get_user_by_sub(_text(sub, "sub", 40))
        if user is None or user.disabled:
            raise UnknownCitizen("no active account has this sub")
    elif id_number not in (None, ""):
        try:
            number = parse_id_number(_text(id_number, "id_number", 18)).value
        except ValidationError as e:
            raise InvalidEvent(f"id_number: {e.message}") from None
        user = db.session.execute(select(User).where(User.id_number == number)).scalar_one_or_none()
        key, masked = citizen_key(number), mask_number(number)
    if user is not None:
        key, masked = citizen_key(user.id_number), mask_name(user.name)
    other = db.session.execute(select(RatingEvent.department_name).where(
        RatingEvent.department_code == dept, RatingEvent.department_name != dept_name).limit(1)).scalar()
    if other is not None:
        raise DepartmentMismatch(f"department code {dept} belongs to {other}")
    if case_no and db.session.execute(select(RatingEvent.id).where(
            RatingEvent.client_id == client_id, RatingEvent.case_no == case_no)).first():
        raise DuplicateEvent(f"case {case_no} is registered already")
    raw = token(32)
    period = timedelta(days=int(current_app.config["TONGBAN_RATING_PERIOD_DAYS"]))
    event = RatingEvent(
        public_id=token(12), client_id=client_id, case_no=case_no, service_item_code=item,
        service_item_name=item_name, department_code=dept, department_name=dept_name, channel=chan,
        user_id=user.id if user else None, citizen_key=key, citizen_masked=masked,
        window=_text(window, "window", 100), staff=_text(staff, "staff", 100), handled_at=at,
        created_at=now, rate_until=at + period, link_hash=digest(raw))
    try:
        with db.session.begin_nested():
            db.session.add(event)
    except IntegrityError:
        raise DuplicateEvent(f"case {case_no} is registered already") from None
    audit.record("rating.event_registered", actor=actor or f"client:{client_id}",
                 object=f"rating_event:{event.public_id}",
                 detail={"service_item": item, "department": dept, "channel": chan, "case_no": case_no or ""})
    return NewEvent(event, raw)


def get_event(public_id: str) -> RatingEvent:
    event = db.session.execute(select(RatingEvent).where(RatingEvent.public_id == public_id)
                               ).scalar_one_or_none()
    if event is None:
        raise EventNotFound("no such service event")
    return event


def event_by_link(raw: str) -> RatingEvent:
    event = db.session.execute(select(RatingEvent).where(RatingEvent.link_hash == digest(raw or ""))
                               ).scalar_one_or_none()
    if event is None:
        raise LinkInvalid("this rating link is not valid")
    return event


def belongs(event: RatingEvent, user) -> bool:
    if user is None:
        return False
    if event.user_id is not None and event.user_id == user.id:
        return True
    return bool(event.citizen_key) and hmac.compare_digest(event.citizen_key, citizen_key(user.id_number))


def has_citizen(event: RatingEvent) -> bool:
    return event.user_id is not None or bool(event.citizen_key)


def events_of(user, limit: int = 100) -> list[RatingEvent]:
    """The citizen's services, newest first (account holders and window services by ID number)."""
    return list(db.session.execute(
        select(RatingEvent).where(or_(RatingEvent.user_id == user.id,
                                      RatingEvent.citizen_key == citizen_key(user.id_number)))
        .order_by(RatingEvent.handled_at.desc(), RatingEvent.id.desc()).limit(limit)).scalars())


def own_event(user, public_id: str) -> RatingEvent:
    event = get_event(public_id)
    if not belongs(event, user):
        raise NotYourEvent("this service was not provided to you")
    return event


def rateable(event: RatingEvent, now: datetime | None = None) -> bool:
    return event.rating is None and (now or utcnow()) <= event.rate_until


# ---------------------------------------------------------------- rating


def check_rating(level, reasons, comment) -> tuple[int, list[str], str]:
    try:
        level = int(level)
    except (TypeError, ValueError):
        raise InvalidRating("level must be 1 (非常不满意) to 5 (非常满意)") from None
    if level not in LEVELS:
        raise InvalidRating("level must be 1 (非常不满意) to 5 (非常满意)")
    if reasons is None:
        reasons = []
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list | tuple) or not all(isinstance(r, str) for r in reasons):
        raise InvalidRating("reasons must be a list of reason codes")
    reasons = sorted(set(reasons))
    allowed = set(BAD_REASONS) if level <= BAD else set(GOOD_REASONS) if level > SATISFIED else set(REASONS)
    unknown = [r for r in reasons if r not in allowed]
    if unknown:
        raise InvalidRating(f"reason codes not allowed at level {level}: {', '.join(unknown)}")
    if level <= BAD and not reasons:
        raise InvalidRating("choose at least one reason for a rating below 基本满意")
    comment = _text(comment, "comment", MAX_COMMENT, error=InvalidRating)
    return level, reasons, comment


def rate(event: RatingEvent, *, level, reasons=None, comment=None, rater=None, link: str | None = None,
         now: datetime | None = None) -> Rating:
    """Rate ``event`` once. With ``link`` the one-time link is consumed (anyone holding it may rate,
    unless logged in as somebody else than the event's citizen); without it ``rater`` must be the
    event's citizen."""
    now = now or utcnow()
    level, reasons, comment = check_rating(level, reasons, comment)
    mine = belongs(event, rater)
    if rater is not None and not mine and (link is None or has_citizen(event)):
        raise NotYourEvent("this service was not provided to you")
    if rater is None and link is None:
        raise NotYourEvent("log in or use the rating link")
    if now > event.rate_until:
        raise RatingClosed("the rating period for this service is over")
    if event.rating is not None:
        raise AlreadyRated("this service has been rated already")
    used = update(RatingEvent).where(RatingEvent.id == event.id, RatingEvent.link_used_at.is_(None))
    if link is not None:
        done = db.session.execute(used.where(RatingEvent.link_hash == digest(link)).values(link_used_at=now))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise RatingClosed("this rating link has been used already")
    else:  # rated from the account: the link dies too
        db.session.execute(used.values(link_used_at=now))
    row = Rating(public_id=token(12), event_id=event.id, level=level, reasons=reasons, comment=comment,
                 # only the event's own citizen counts as a rater in person (see figures' logged_in)
                 rater_user_id=rater.id if mine else None,
                 via="link" if link is not None else "account", rated_at=now, month=month_of(now))
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:
        raise AlreadyRated("this service has been rated already") from None
    actor = f"user:{rater.sub}" if rater is not None else "rating-link"
    audit.record("rating.rated", actor=actor, object=f"rating:{row.public_id}",
                 detail={"event": event.public_id, "level": level, "reasons": reasons, "via": row.via})
    if level <= BAD:
        _open_case(row, event, now, actor)
    db.session.refresh(event)
    return row


def _open_case(row: Rating, event: RatingEvent, now: datetime, actor: str) -> RatingCase:
    cfg = current_app.config
    c = RatingCase(rating_id=row.id, department_code=event.department_code, state="open", created_at=now,
                   verify_due=add_working_days(now, int(cfg["TONGBAN_RATING_VERIFY_DAYS"])),
                   due_at=add_working_days(now, int(cfg["TONGBAN_RATING_RECTIFY_DAYS"])))
    db.session.add(c)
    db.session.flush()
    audit.record("rating.case_opened", actor=actor, object=f"rating_case:{c.id}",
                 detail={"rating": row.public_id, "department": event.department_code,
                         "due_at": c.due_at.isoformat(timespec="seconds")})
    return c


# ---------------------------------------------------------------- bad-rating cases


def is_supervisor(user) -> bool:
    """Administrators of the operating authority supervise every department and decide appeals."""
    from people.accounts import is_authority_staff

    return is_authority_staff(user, ("admin",))


def handled_departments(user) -> set[str]:
    """USCCs of the departments where ``user`` is a clerk or an administrator."""
    from people.models import Organisation, StaffRole

    if user is None:
        return set()
    return set(db.session.execute(
        select(Organisation.uscc).join(StaffRole, StaffRole.org_id == Organisation.id)
        .where(StaffRole.user_id == user.id, StaffRole.role.in_(HANDLER_ROLES))).scalars())


def may_handle(user, c: RatingCase) -> bool:
    return user is not None and (c.department_code in handled_departments(user) or is_supervisor(user))


def get_case(case_id) -> RatingCase:
    try:
        c = db.session.get(RatingCase, int(case_id))
    except (TypeError, ValueError):
        c = None
    if c is None:
        raise CaseNotFound("no such case")
    return c


def cases_for(user, state: str | None = None, limit: int = 200) -> list[RatingCase]:
    """The cases of the departments ``user`` handles (every case for the supervising authority)."""
    if is_supervisor(user):
        return cases_for_reader(state, limit)
    return cases_for_reader(state, limit, departments=handled_departments(user) or {""})


def cases_for_reader(state: str | None = None, limit: int = 200,
                     departments: set[str] | None = None) -> list[RatingCase]:
    q = select(RatingCase).order_by(RatingCase.due_at, RatingCase.id)
    if departments is not None:
        q = q.where(RatingCase.department_code.in_(departments))
    if state == "overdue":
        q = q.where(RatingCase.state.not_in(NOT_RUNNING), RatingCase.due_at < utcnow())
    elif state == "active":
        q = q.where(RatingCase.state.not_in(TERMINAL))
    elif state in CASE_STATES:
        q = q.where(RatingCase.state == state)
    return list(db.session.execute(q.limit(limit)).scalars())


def _guarded(c: RatingCase, from_states, values: dict) -> None:
    done = db.session.execute(update(RatingCase).where(RatingCase.id == c.id, RatingCase.state.in_(from_states))
                              .values(**values))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise BadCaseStep("the case has moved on; reload it")
    db.session.refresh(c)


def case_step(c: RatingCase, step: str, user, *, note=None, answer=None, now: datetime | None = None) -> None:
    """One step of the department's handling; ``note`` is the step's text (required but for close)."""
    now = now or utcnow()
    if step not in STEPS:
        raise BadCaseStep(f"unknown step {step!r}")
    if not may_handle(user, c):
        raise NotCaseHandler("you do not handle this department's ratings")
    from_states, to_state = STEPS[step]
    if c.state not in from_states:
        raise BadCaseStep(f"a case in state {c.state} cannot be {step}")
    at_field, text_field = STEP_FIELDS[step]
    values: dict = {"state": to_state, at_field: now}
    if text_field:
        values[text_field] = _text(note, "note", MAX_NOTE, required=True, error=InvalidRating)
    if step == "call_back":
        if answer not in CALLBACK_ANSWERS:
            raise InvalidRating(f"answer must be one of {', '.join(CALLBACK_ANSWERS)}")
        values["callback_answer"] = answer
    if step == "appeal":
        if c.appeal_decision:
            raise BadCaseStep("this case has been appealed already")
        values.update(appeal_from=c.state, appealed_by=f"user:{user.sub}")
    _guarded(c, from_states, values)
    audit.record(f"rating.case_{step}", actor=f"user:{user.sub}", object=f"rating_case:{c.id}",
                 detail={"state": to_state, "answer": answer or "", "note": values.get(text_field, "")[:200]
                         if text_field else ""})


def decide_appeal(c: RatingCase, user, *, uphold: bool, note=None, now: datetime | None = None) -> None:
    """The authority decides: upheld takes the rating out of every figure; rejected resumes the case."""
    now = now or utcnow()
    if not is_supervisor(user):
        raise NotCaseHandler("only the supervising authority decides appeals")
    if c.state != "appealed":
        raise BadCaseStep("the case is not under appeal")
    if c.appealed_by == f"user:{user.sub}":
        raise NotCaseHandler("whoever appealed cannot decide the appeal")
    note = _text(note, "note", MAX_NOTE, required=True, error=InvalidRating)
    to_state = "upheld" if uphold else (c.appeal_from or "open")
    _guarded(c, ("appealed",), {"state": to_state, "appeal_decision": "upheld" if uphold else "rejected",
                                "appeal_decided_at": now, "appeal_note": note})
    if uphold:
        db.session.execute(update(Rating).where(Rating.id == c.rating_id).values(invalidated=True))
    audit.record("rating.appeal_decided", actor=f"user:{user.sub}", object=f"rating_case:{c.id}",
                 detail={"decision": c.appeal_decision, "state": to_state})


def overdue(c: RatingCase, now: datetime | None = None) -> bool:
    now = now or utcnow()
    if c.state in NOT_RUNNING:
        return False
    return now > c.due_at or (c.state == "open" and now > c.verify_due)


def escalate_overdue(now: datetime | None = None) -> int:
    """Escalate overdue cases to the authority: level 1 when not verified in time, level 2 when
    not closed in time. Each escalation is audited once."""
    now = now or utcnow()
    live = RatingCase.state.not_in(NOT_RUNNING)
    late_verify = and_(RatingCase.state == "open", RatingCase.verify_due < now)
    candidates = db.session.execute(select(RatingCase.id, RatingCase.due_at).where(
        live, or_(and_(RatingCase.due_at < now, RatingCase.escalation_level < 2),
                  and_(late_verify, RatingCase.escalation_level < 1)))).all()
    count = 0
    for case_id, due_at in candidates:
        level = 2 if due_at < now else 1
        done = db.session.execute(update(RatingCase).where(
            RatingCase.id == case_id, RatingCase.escalation_level < level, live).values(
            escalation_level=level, escalated_at=now))
        if done.rowcount == 1:  # type: ignore[attr-defined]
            count += 1
            audit.record("rating.case_escalated", actor="system", object=f"rating_case:{case_id}",
                         detail={"level": level, "reason": "not closed in time" if level == 2
                                 else "not verified in time"})
    return count


# ---------------------------------------------------------------- figures


GROUPS = {
    "department": (RatingEvent.department_code, RatingEvent.department_name),
    "item": (RatingEvent.service_item_code, RatingEvent.service_item_name),
    "channel": (RatingEvent.channel,),
    "month": (Rating.month,),
}


def _rate(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def figures(by: str | None = None, month: str | None = None, department: str | None = None) -> list[dict]:
    """Satisfaction rate, bad ratings and on-time handling, grouped ``by`` (or one total row)."""
    month = check_month(month)
    now = utcnow()
    keys = GROUPS.get(by or "", ())
    bad = Rating.level <= BAD
    closed_on_time = and_(RatingCase.closed_at.is_not(None), RatingCase.closed_at <= RatingCase.due_at)
    live_late = and_(RatingCase.state.not_in(NOT_RUNNING), RatingCase.due_at < now)
    q = (select(*keys, func.count(Rating.id),
                func.sum(case((Rating.level >= SATISFIED, 1), else_=0)),
                func.sum(case((bad, 1), else_=0)),
                func.sum(case((RatingCase.state == "closed", 1), else_=0)),
                func.sum(case((closed_on_time, 1), else_=0)),
                func.sum(case((live_late, 1), else_=0)),
                func.sum(case((Rating.rater_user_id.is_not(None), 1), else_=0)),
                *[func.sum(case((Rating.level == lv, 1), else_=0)) for lv in (5, 4, 3, 2, 1)])
         .select_from(Rating).join(RatingEvent, RatingEvent.id == Rating.event_id)
         .outerjoin(RatingCase, RatingCase.rating_id == Rating.id)
         .where(Rating.invalidated.is_(False)))
    if month:
        q = q.where(Rating.month == month)
    if department:
        q = q.where(RatingEvent.department_code == department)
    if keys:
        q = q.group_by(*keys).order_by(*keys)
    rows = []
    for r in db.session.execute(q).all():
        k = len(keys)
        total, satisfied, bad_n, closed, on_time, late, logged_in = (int(x or 0) for x in r[k:k + 7])
        key = r[0] if keys else ""
        name = r[1] if len(keys) > 1 else (channel_name(key) if by == "channel" else key)
        rows.append({"key": key, "name": name, "ratings": total, "satisfied": satisfied,
                     "satisfaction_rate": _rate(satisfied, total), "bad": bad_n, "cases_closed": closed,
                     "closed_on_time": on_time, "on_time_rate": _rate(on_time, bad_n), "overdue": late,
                     # rated by the logged-in citizen, not with the link alone (which the department's
                     # own system holds): a low share with high satisfaction is worth a look
                     "logged_in": logged_in, "logged_in_rate": _rate(logged_in, total),
                     "levels": {str(lv): int(n or 0) for lv, n in zip((5, 4, 3, 2, 1), r[k + 7:], strict=True)}})
    return rows


def report(month: str | None = None) -> dict:
    month = check_month(month)
    return {"month": month or "all", "totals": figures(None, month)[0],
            "by_department": figures("department", month), "by_service_item": figures("item", month),
            "by_channel": figures("channel", month), "by_month": [] if month else figures("month", None)}


def public_cases(month: str | None = None, limit: int = 50) -> list[dict]:
    """Handled bad ratings for the public page: masked, no staff names, no ID numbers."""
    month = check_month(month)
    q = (select(RatingCase).join(Rating, Rating.id == RatingCase.rating_id)
         .where(RatingCase.state == "closed").order_by(RatingCase.closed_at.desc()).limit(limit))
    if month:
        q = q.where(Rating.month == month)
    out = []
    for c in db.session.execute(q).scalars():
        r, ev = c.rating, c.rating.event
        out.append({"department": ev.department_name, "service_item": ev.service_item_name,
                    "channel": channel_name(ev.channel), "level": r.level,
                    "level_name": localised(LEVELS[r.level]), "reasons": [localised(REASONS[x]) for x in r.reasons],
                    "comment": mask_text(r.comment), "evaluator": ev.citizen_masked or "匿名",
                    "rated_on": (r.rated_at + CST).date().isoformat(),
                    "response": mask_text(c.response), "rectification": mask_text(c.rectification),
                    "closed_on": (c.closed_at + CST).date().isoformat() if c.closed_at else "",
                    "on_time": bool(c.closed_at and c.closed_at <= c.due_at)})
    return out


def iso_beijing(at: datetime | None) -> str | None:
    return (at + CST).isoformat(timespec="seconds") + "+08:00" if at else None


def record(rating: Rating) -> dict:
    """One rating as a GB/T 39735 data record (the mapping: docs/ratings.md)."""
    ev, c = rating.event, rating.case
    rec = {
        "evaluation_id": rating.public_id,
        "service_event_id": ev.public_id,
        "case_no": ev.case_no or "",
        "service_item_code": ev.service_item_code,
        "service_item_name": ev.service_item_name,
        "department_code": ev.department_code,
        "department_name": ev.department_name,
        "channel_code": ev.channel,
        "channel_name": CHANNELS_ZH[ev.channel],
        "level": rating.level,
        "level_name": LEVELS_ZH[rating.level],
        "reasons": [{"code": x, "name": REASONS_ZH[x]} for x in rating.reasons],
        "comment": mask_text(rating.comment),
        "evaluator": ev.citizen_masked or "匿名",
        "evaluation_method": "link" if rating.via == "link" else "account",
        "window": ev.window,
        "handled_at": iso_beijing(ev.handled_at),
        "evaluated_at": iso_beijing(rating.rated_at),
        "valid": not rating.invalidated,
        "rectification": None,
    }
    if c is not None:
        rec["rectification"] = {
            "state": c.state, "due_at": iso_beijing(c.due_at), "verified_at": iso_beijing(c.verified_at),
            "verify_note": c.verify_note, "responded_at": iso_beijing(c.responded_at), "response": c.response,
            "rectified_at": iso_beijing(c.rectified_at), "rectification": c.rectification,
            "called_back_at": iso_beijing(c.called_back_at), "callback_answer": c.callback_answer,
            "closed_at": iso_beijing(c.closed_at), "on_time": bool(c.closed_at and c.closed_at <= c.due_at),
            "appeal": {"reason": c.appeal_reason, "decision": c.appeal_decision,
                       "decided_at": iso_beijing(c.appeal_decided_at)} if c.appealed_at else None,
            "escalation_level": c.escalation_level,
        }
    return rec


def export(month: str | None = None, limit: int = 100_000) -> list[dict]:
    month = check_month(month)
    q = select(Rating).order_by(Rating.rated_at, Rating.id).limit(limit)
    if month:
        q = q.where(Rating.month == month)
    return [record(r) for r in db.session.execute(q).scalars()]


def recent_months(n: int = 12) -> list[str]:
    return list(db.session.execute(select(Rating.month).distinct().order_by(Rating.month.desc()).limit(n))
                .scalars())


__all__ = ["CHANNELS", "LEVELS", "REASONS", "NewEvent", "add_working_days", "case_step", "decide_appeal",
           "escalate_overdue", "event_by_link", "events_of", "export", "figures", "public_cases", "rate",
           "register_event", "report"]


def escalation_chore() -> None:
    """The worker thread's hourly run of ``flask ratings escalate``."""
    escalate_overdue()
    db.session.commit()
