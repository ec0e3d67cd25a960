"""What the licence pages show a person: the verdict, its date and reason, what to compare.

The JSON answers keep their contract (services.public_view); these dicts feed templates only.
Dates and times are shown in Beijing time (Babel's default time zone, Asia/Shanghai).
No request reading here.
"""

from __future__ import annotations

from datetime import date, datetime

from flask_babel import format_date, format_datetime
from flask_babel import gettext as _
from sqlalchemy import select

from tongban.extensions import db
from tongban.masking import mask_name_one

from .models import Licence, LicenceType

# how many replacements are followed to find the current version of a changed licence
_MAX_CHAIN = 20
_NUMBER_KEYS = ("cert_no", "permit_no", "card_no")


def state(status: str, valid_until: date | None, on: date | None = None) -> str:
    """The licence's own state for people: valid | suspended | revoked | expired | superseded."""
    from .services import today

    if status == "valid" and valid_until is not None and valid_until < (on or today()):
        return "expired"
    return status


def state_label(st: str) -> str:
    return {"valid": _("Valid"), "suspended": _("Suspended"), "revoked": _("Cancelled (revoked)"),
            "expired": _("Expired"), "superseded": _("Replaced by a new version"),
            }.get(st, _("Unknown"))


def fmt_date(d: date | datetime | None) -> str:
    """A date as people read it (2026年12月7日); a UTC datetime is first put into Beijing time."""
    if d is None:
        return ""
    if isinstance(d, datetime):
        return format_datetime(d, _("yyyy-MM-dd"))
    return format_date(d, _("yyyy-MM-dd"))


def fmt_time(d: datetime | None) -> str:
    """A naive UTC datetime in Beijing time, to the minute."""
    return format_datetime(d, _("yyyy-MM-dd HH:mm")) if d else ""


def since(st: str, status_changed_at: datetime | None, valid_until: date | None) -> str:
    """The date the licence stopped being valid ('' when valid or unknown)."""
    if st == "expired":
        return fmt_date(valid_until)
    if st in ("suspended", "revoked", "superseded"):
        return fmt_date(status_changed_at)
    return ""


def current_version(identifier: str | None) -> Licence | None:
    """The version that replaces a changed licence now (following later changes too)."""
    seen: set[str] = set()
    lic = None
    while identifier and identifier not in seen and len(seen) < _MAX_CHAIN:
        seen.add(identifier)
        lic = db.session.execute(select(Licence).where(Licence.identifier == identifier)).scalar_one_or_none()
        if lic is None or lic.status != "superseded":
            break
        identifier = lic.superseded_by
    return lic


def number_of(type_code: str, holder_kind: str, holder_id: str, number: str) -> tuple[str, str]:
    """(label, value) of the number printed on the licence: 结婚证字号, 统一社会信用代码, 证照编号 ..."""
    t = db.session.execute(select(LicenceType).where(LicenceType.code == type_code)).scalar_one_or_none()
    items = {i.get("name"): i for i in (t.items if t else []) or []}
    for key in _NUMBER_KEYS:
        if key in items:
            return items[key].get("label") or _("Licence number"), number
    label = ((t.layout or {}).get("number_label") if t else None) or ""
    if label == "统一社会信用代码" or (not label and holder_kind != "citizen" and number == holder_id):
        return "统一社会信用代码", number
    return label or _("Licence number"), number


def holder_shown(holder_kind: str, holder_name: str) -> str:
    """An organisation's name is public information; a person's keeps all but one character."""
    return holder_name if holder_kind != "citizen" else mask_name_one(holder_name)


def scan_view(row) -> dict:
    """The scan page /v/<code>: verdict, date, replacement link, and the facts to compare."""
    from .services import verify_url

    st = state(row.status, row.valid_until)
    out = {"valid": st == "valid", "state": st, "label": state_label(st),
           "since": since(st, row.status_changed_at, row.valid_until), "current": None,
           "type_name": row.type_name, "type": row.type_code, "issuer": row.issuer_name,
           "holder": holder_shown(row.holder_kind, row.holder_name),
           "holder_is_org": row.holder_kind != "citizen",
           "issued_on": fmt_date(row.issued_on),
           "valid_until": fmt_date(row.valid_until) if row.valid_until else _("No expiry"),
           "id": row.identifier}
    out["number_label"], out["number"] = number_of(row.type_code, row.holder_kind, row.holder_id, row.number)
    if st == "superseded":
        new = current_version(row.superseded_by)
        if new is not None:
            out["current"] = {"id": new.identifier, "url": verify_url(new.verify_code),
                              "state": state(new.status, new.valid_until)}
    return out


def wallet_state(lic: Licence) -> dict:
    """The wallet's status line: state, label, since when, and the reason the department gave."""
    st = state(lic.status, lic.valid_until)
    reason = lic.status_reason or ""
    if st == "expired" and lic.status == "valid":
        reason = _("The validity period has ended")
    return {"state": st, "valid": st == "valid", "label": state_label(st),
            "since": since(st, lic.status_changed_at, lic.valid_until), "reason": reason,
            "changed_at": fmt_time(lic.status_changed_at)}


__all__ = ["current_version", "fmt_date", "fmt_time", "scan_view", "state", "state_label", "wallet_state"]
