"""E-licence operations: catalogue, issuing, lifecycle, lookups, sharing. No Flask requests here.

Services flush; the request or CLI command commits once, so a failure anywhere
(invalid data, no seal, sealing error) leaves nothing: no serial consumed, no row,
no file (the PDF lives in the row).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import bindparam, select, update

from tongban import audit
from tongban.clock import digest, token, utcnow
from tongban.errors import ValidationError
from tongban.extensions import db, read_connection
from tongban.identifiers import parse_id_number, validate_uscc
from tongban.masking import mask_name
from tongban.upsert import upsert

from . import identifiers, verification
from .catalogue import TYPES
from .errors import (
    BadTransition,
    InvalidField,
    LicenceNotFound,
    NoLicenceSeal,
    NotDelegated,
    UnknownType,
)
from .models import (
    HOLDER_CITIZEN,
    HOLDER_CODE_TYPE,
    HOLDER_ORG,
    DownloadLink,
    Licence,
    LicenceAccess,
    LicenceCounter,
    LicenceDelegation,
    LicenceType,
)

if TYPE_CHECKING:
    from . import pdf

STATUS_LIST_KEY = "status-list"
PUBLIC_STATUSES = ("valid", "suspended", "revoked", "expired")
ITEM_TYPES = ("text", "textarea", "date", "number", "select", "id_number", "uscc")
# licence/pdf.py's LAYOUTS and PAGES (tests/tongban/test_lean_imports.py keeps them equal): the
# drawing code and reportlab are imported when a licence is drawn, not when the app starts
LAYOUT_KINDS = ("permit", "card", "booklet", "diploma", "form")
PAGE_NAMES = ("A4", "A4L", "A5L", "card")


def today() -> date:
    """Today in Beijing (UTC+8, no daylight saving): the date on licences and when they expire."""
    return (utcnow() + timedelta(hours=8)).date()


# ---------------------------------------------------------------- catalogue


def seed_catalogue() -> int:
    """Insert the seed types that are missing (idempotent; run after ``db upgrade``)."""
    have = set(db.session.execute(select(LicenceType.code)).scalars())
    added = 0
    for spec in TYPES:
        if spec["code"] not in have:
            _add_type_row(spec)
            added += 1
    if added:
        db.session.flush()
    return added


def _add_type_row(spec: dict) -> LicenceType:
    row = LicenceType(code=spec["code"], name=spec["name"], holder_kind=spec["holder_kind"],
                      authority=spec.get("authority", ""), items=spec.get("items", []),
                      validity=spec.get("validity", {}), layout=spec.get("layout", {}), active=True,
                      created_at=utcnow())
    db.session.add(row)
    return row


def check_type_spec(spec: dict) -> dict:
    """Validate a catalogue entry an administrator submits."""
    if not isinstance(spec, dict):
        raise ValidationError("a licence type is a JSON object", "invalid_licence_type")
    code = str(spec.get("code", "")).strip().upper()
    if len(code) != 21 or not code[18:].isdigit():
        raise ValidationError("type code must be the defining authority's USCC + 3 digits (21 characters)",
                              "invalid_licence_type")
    validate_uscc(code[:18])
    name = str(spec.get("name", "")).strip()
    if not name:
        raise ValidationError("a licence type needs a name", "invalid_licence_type")
    if spec.get("holder_kind") not in (HOLDER_CITIZEN, HOLDER_ORG):
        raise ValidationError("holder_kind must be citizen or organisation", "invalid_licence_type")
    items = spec.get("items") or []
    seen = set()
    for it in items:
        if not isinstance(it, dict) or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", str(it.get("name", ""))):
            raise ValidationError("each data item needs a name of lowercase letters, digits, _",
                                  "invalid_licence_type")
        if it["name"] in seen or not it.get("label"):
            raise ValidationError(f"data item {it['name']!r} is repeated or has no label", "invalid_licence_type")
        seen.add(it["name"])
        if it.get("type", "text") not in ITEM_TYPES:
            raise ValidationError(f"data item type must be one of {', '.join(ITEM_TYPES)}", "invalid_licence_type")
        if it.get("format"):
            try:
                re.compile(it["format"])
            except re.error:
                raise ValidationError(f"format of {it['name']!r} is not a regular expression",
                                      "invalid_licence_type") from None
        it.setdefault("type", "text")
        it.setdefault("required", True)
    layout = spec.get("layout") or {}
    if layout.get("kind", "permit") not in LAYOUT_KINDS or layout.get("page", "A4L") not in PAGE_NAMES:
        raise ValidationError(f"layout.kind must be one of {', '.join(LAYOUT_KINDS)}, page one of "
                              f"{', '.join(PAGE_NAMES)}", "invalid_licence_type")
    if layout.get("file_format", "pdf") not in ("pdf", "ofd"):  # the default file (licence/ofd.py)
        raise ValidationError("layout.file_format must be pdf or ofd", "invalid_licence_type")
    validity = spec.get("validity") or {"permanent": True}
    return {"code": code, "name": name, "holder_kind": spec["holder_kind"],
            "authority": str(spec.get("authority", "")), "items": items, "validity": validity,
            "layout": {"kind": layout.get("kind", "permit"), "page": layout.get("page", "A4L"), **layout}}


def add_type(spec: dict, actor: str) -> LicenceType:
    spec = check_type_spec(spec)
    clash = db.session.execute(select(LicenceType.code).where(
        (LicenceType.code == spec["code"]) | (LicenceType.name == spec["name"]))).first()
    if clash:
        raise ValidationError(f"a type with code {spec['code']} or name {spec['name']} exists",
                              "licence_type_exists")
    row = _add_type_row(spec)
    db.session.flush()
    audit.record("licence.type_added", actor=actor, object=f"licence-type:{row.code}",
                 detail={"name": row.name, "holder_kind": row.holder_kind})
    return row


def list_types() -> list[LicenceType]:
    return list(db.session.execute(select(LicenceType).where(LicenceType.active.is_(True))
                                   .order_by(LicenceType.id)).scalars())


def type_dict(t: LicenceType) -> dict:
    return {"code": t.code, "name": t.name, "holder_kind": t.holder_kind}


def get_type(ref: str) -> LicenceType:
    """By 21-character type code or Chinese name."""
    ref = (ref or "").strip()
    row = db.session.execute(select(LicenceType).where(
        (LicenceType.code == ref.upper()) | (LicenceType.name == ref))).scalar_one_or_none()
    if row is None or not row.active:
        raise UnknownType(f"unknown licence type {ref!r} (see `flask licences types`)")
    return row


# ---------------------------------------------------------------- validation


def check_holder(kind: str, holder_id: str) -> str:
    if kind == HOLDER_CITIZEN:
        return parse_id_number(holder_id, today()).value
    return validate_uscc(holder_id)


def check_data(t: LicenceType, fields: dict[str, str], holder_id: str | None = None) -> dict:
    """The type's data items from ``fields``: required present, formats, options; unknown keys refused;
    past events not in the future; ID numbers consistent with birth dates and not the holder's own."""
    from .checks import cross_problems, must_be_past
    known = {i["name"]: i for i in t.items}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise InvalidField(f"unknown data item(s) for {t.name}: {', '.join(unknown)} "
                           f"(known: {', '.join(known)})")
    out = {}
    for name, it in known.items():
        raw = fields.get(name)
        value = "" if raw is None else str(raw).strip()
        if not value and it.get("default"):
            value = today().isoformat() if it["default"] == "today" else str(it["default"])
        if not value:
            if it.get("required", True):
                raise InvalidField(f"{it['label']} ({name}) is required")
            continue
        kind = it.get("type", "text")
        if it.get("format") and not re.fullmatch(it["format"], value):
            raise InvalidField(f"{it['label']} ({name}) does not match the format {it['format']}")
        if kind == "date":
            try:
                when = date.fromisoformat(value)
            except ValueError:
                raise InvalidField(f"{it['label']} ({name}) must be a date YYYY-MM-DD") from None
            if must_be_past(t, it) and when > today():
                raise InvalidField(f"{it['label']} ({name}) cannot be in the future")
        elif kind == "number":
            try:
                float(value)
            except ValueError:
                raise InvalidField(f"{it['label']} ({name}) must be a number") from None
        elif kind == "select" and value not in it.get("options", []):
            raise InvalidField(f"{it['label']} ({name}) must be one of {'、'.join(it.get('options', []))}")
        elif kind == "id_number":
            try:
                value = parse_id_number(value, today()).value
            except ValidationError as e:
                raise InvalidField(f"{it['label']} ({name}): {e.message}") from None
        elif kind == "uscc":
            try:
                value = validate_uscc(value)
            except ValidationError as e:
                raise InvalidField(f"{it['label']} ({name}): {e.message}") from None
        if len(value) > 2000:
            raise InvalidField(f"{it['label']} ({name}) is too long")
        if kind != "date" and must_be_past(t, it) and value[:10] > today().isoformat():
            raise InvalidField(f"{it['label']} ({name}) cannot be in the future")
        out[name] = value
    for name, problem in cross_problems(t, holder_id or "", out, today()).items():
        raise InvalidField(f"{known[name]['label']} ({name}): {problem}")
    return out


def valid_until_for(t: LicenceType, start: date, requested: date | str | None) -> date | None:
    rule = t.validity or {}
    if requested:
        if isinstance(requested, str):
            try:
                requested = date.fromisoformat(requested)
            except ValueError:
                raise InvalidField("valid-until must be a date YYYY-MM-DD") from None
        if requested <= start:
            raise InvalidField("valid-until must be after the issue date")
        max_years = rule.get("max_years") or rule.get("years")
        if max_years and not rule.get("permanent") and requested > _add_years(start, max_years):
            raise InvalidField(f"{t.name} is valid for at most {max_years} years")
        return requested
    if rule.get("permanent") or not rule.get("years"):
        return None
    return _add_years(start, rule["years"]) - timedelta(days=1)


def _add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


# ---------------------------------------------------------------- counters


def next_value(key: str) -> int:
    """Atomically take the next number of counter ``key`` in the current transaction.

    ``UPDATE ... RETURNING`` locks the counter row until commit, so two issuers can
    never read the same value; a rollback gives the number back.
    """
    stmt = (update(LicenceCounter).where(LicenceCounter.key == key)
            .values(value=LicenceCounter.value + 1).returning(LicenceCounter.value))
    got = db.session.execute(stmt).scalar()
    if got is not None:
        return got
    _create_counter(key)
    return db.session.execute(stmt).scalar_one()


def _create_counter(key: str) -> None:
    db.session.execute(upsert(db.session, LicenceCounter, {"key": key, "value": 0}, ["key"]))


# ---------------------------------------------------------------- issuing


def _org(uscc: str):
    from people.accounts import get_org

    return get_org(uscc)


def _seal_services():
    from seal import services

    return services


def licence_seal(uscc: str):
    seal = _seal_services().get_active_seal(uscc, kind="licence")
    if seal is None:
        raise NoLicenceSeal(f"organisation {uscc} has no active licence-issuing seal (电子证照专用章)")
    return seal


def verify_url(code: str) -> str:
    return f"{current_app.config['TONGBAN_ISSUER']}/v/{code}"


_NUMBER_KEYS = ("cert_no", "permit_no", "card_no")


def _number(t: LicenceType, holder_id: str, data: dict, lid: identifiers.LicenceId) -> str:
    for k in _NUMBER_KEYS:
        if data.get(k):
            return data[k]
    if t.holder_kind == HOLDER_ORG and (t.layout or {}).get("number_label") == "统一社会信用代码":
        return holder_id
    return f"{lid.issuer_uscc[8:17]}{lid.serial}"


def sheet(lic: Licence, t: LicenceType | None = None, watermark: str | None = None) -> pdf.Sheet:
    from . import pdf

    t = t or lic.type
    return pdf.Sheet(type_name=lic.type_name, layout=t.layout or {}, items=t.items or [], data=lic.data or {},
                     holder_kind=lic.holder_kind, holder_id=lic.holder_id, holder_name=lic.holder_name,
                     issuer_name=lic.issuer_name, issued_on=lic.issued_on, valid_from=lic.valid_from,
                     valid_until=lic.valid_until, identifier=lic.identifier, number=lic.number,
                     verify_url=verify_url(lic.verify_code), watermark=watermark)


def _sealed_pdf(lic: Licence, t: LicenceType, actor: str, purpose: str, watermark: str | None = None) -> bytes:
    from . import pdf

    seal = licence_seal(lic.issuer_uscc)
    out = pdf.render(sheet(lic, t, watermark))
    return _seal_services().sign_pdf(seal, out.pdf, purpose=purpose, actor=actor, certify=True,
                                     page=out.page, box=out.seal_box, field_name="LicenceSeal", licence_use=True)


# ---------------------------------------------------------------- departments and delegations


def delegated_issuer(department_uscc: str) -> str | None:
    """The organisation under whose licence seal ``department_uscc`` may issue, if delegated."""
    return db.session.execute(select(LicenceDelegation.issuer_uscc).where(
        LicenceDelegation.department_uscc == department_uscc).order_by(LicenceDelegation.id)).scalars().first()


def delegate(department_uscc: str, issuer_uscc: str | None = None, actor: str = "admin") -> LicenceDelegation:
    """Allow a department to issue under ``issuer_uscc``'s licence seal (default: the authority's)."""
    dept = _org(validate_uscc(department_uscc))
    issuer = _org(validate_uscc(issuer_uscc or current_app.config["TONGBAN_AUTHORITY_USCC"]))
    if dept.uscc == issuer.uscc:
        raise ValidationError("a department issues under its own seal without a delegation", "invalid_delegation")
    licence_seal(issuer.uscc)
    row = db.session.execute(select(LicenceDelegation).where(LicenceDelegation.department_uscc == dept.uscc,
                                                              LicenceDelegation.issuer_uscc == issuer.uscc)
                             ).scalar_one_or_none()
    if row is None:
        row = LicenceDelegation(department_uscc=dept.uscc, issuer_uscc=issuer.uscc, granted_by=actor[:200],
                                created_at=utcnow())
        db.session.add(row)
        db.session.flush()
        audit.record("licence.delegated", actor=actor, object=f"org:{dept.uscc}",
                     detail={"issuer": issuer.uscc})
    return row


def withdraw_delegation(department_uscc: str, issuer_uscc: str | None = None, actor: str = "admin") -> int:
    issuer = issuer_uscc or current_app.config["TONGBAN_AUTHORITY_USCC"]
    rows = db.session.execute(select(LicenceDelegation).where(
        LicenceDelegation.department_uscc == (department_uscc or "").strip().upper(),
        LicenceDelegation.issuer_uscc == issuer.strip().upper())).scalars().all()
    for row in rows:
        db.session.delete(row)
        audit.record("licence.delegation_withdrawn", actor=actor, object=f"org:{row.department_uscc}",
                     detail={"issuer": row.issuer_uscc})
    db.session.flush()
    return len(rows)


def department_of(lic: Licence) -> str:
    return lic.department_uscc or lic.issuer_uscc


def may_manage(department_usccs, lic: Licence) -> bool:
    """A clerk manages only licences their own department issued."""
    return department_of(lic) in set(department_usccs)


def issue(type_ref: str, holder_id: str, holder_name: str, fields: dict | None = None, *,
          issuer_uscc: str | None = None, valid_until: date | str | None = None, actor: str = "system",
          department_uscc: str | None = None) -> Licence:
    """Issue an e-licence: identifier, metadata, sealed and certified PDF. Flushes; the caller commits.

    ``department_uscc`` is the issuing department (default: the issuer); a department issuing
    under another organisation's seal needs a delegation (``flask licences delegate``).
    """
    t = get_type(type_ref)
    holder_id = check_holder(t.holder_kind, holder_id)
    holder_name = (holder_name or "").strip()
    if not holder_name or len(holder_name) > 200:
        raise InvalidField("the holder's name is required")
    data = check_data(t, fields or {}, holder_id)
    issuer = _org(issuer_uscc or current_app.config["TONGBAN_AUTHORITY_USCC"])
    department = (department_uscc or issuer.uscc).strip().upper()
    if department != issuer.uscc and delegated_issuer(department) != issuer.uscc:
        raise NotDelegated(f"department {department} has no delegation to issue under the seal of {issuer.uscc}")
    licence_seal(issuer.uscc)  # before a serial is taken: refuse early
    start = today()
    until = valid_until_for(t, start, valid_until)
    return _create_version(t, issuer.uscc, issuer.name, holder_id, holder_name, data, start, until, actor,
                           serial=None, version=1, department_uscc=department)


def _create_version(t, issuer_uscc, issuer_name, holder_id, holder_name, data, start, until, actor, *,
                    serial: str | None, version: int, department_uscc: str) -> Licence:
    if serial is None:
        serial_no = next_value(f"serial:{issuer_uscc}")
        lid = identifiers.build(t.code, issuer_uscc, serial_no, version)
    else:
        lid = identifiers.build(t.code, issuer_uscc, int(serial), version)
    now = utcnow()
    lic = Licence(identifier=str(lid), verify_code=token(16), type_id=t.id, type_code=t.code, type_name=t.name,
                  issuer_uscc=issuer_uscc, issuer_name=issuer_name, serial=lid.serial, version=version,
                  holder_kind=t.holder_kind, holder_id=holder_id, holder_name=holder_name,
                  number=_number(t, holder_id, data, lid), data=data, issued_on=start, valid_from=start,
                  valid_until=until, status="valid", status_idx=next_value(STATUS_LIST_KEY) - 1,
                  issued_by=actor[:200], created_at=now, pdf=b"", pdf_sha256="", department_uscc=department_uscc)
    lic.pdf = _sealed_pdf(lic, t, actor, purpose=f"签发电子证照 {lic.identifier}")
    lic.pdf_sha256 = hashlib.sha256(lic.pdf).hexdigest()
    lic.signed_sha256 = verification.signed_sha256(lic.pdf)
    db.session.add(lic)
    db.session.flush()
    audit.record("licence.issued", actor=actor, object=f"licence:{lic.identifier}",
                 detail={"type": t.code, "type_name": t.name, "holder": mask_name(holder_name),
                         "issuer": issuer_uscc, "version": version})
    from .offline import status_changed

    status_changed()
    return lic


# ---------------------------------------------------------------- lookups and status


def find(identifier: str) -> Licence:
    lic = db.session.execute(select(Licence).where(Licence.identifier == (identifier or "").strip().upper())
                             ).scalar_one_or_none()
    if lic is None:
        raise LicenceNotFound(f"no e-licence {identifier!r}")
    return lic


def public_status(status: str, valid_until: date | None, on: date | None = None) -> str:
    if status == "superseded":
        return "revoked"
    if status == "valid" and valid_until is not None and valid_until < (on or today()):
        return "expired"
    return status


def _set_status(lic: Licence, new: str, reason: str, actor: str, action: str) -> Licence:
    lic.status, lic.status_reason, lic.status_changed_at = new, reason or "", utcnow()
    audit.record(action, actor=actor, object=f"licence:{lic.identifier}", detail={"reason": reason or ""})
    from .offline import status_changed

    status_changed()
    return lic


def suspend(identifier: str, reason: str, actor: str) -> Licence:
    lic = find(identifier)
    if public_status(lic.status, lic.valid_until) != "valid":
        raise BadTransition(f"only a valid licence can be suspended (this one is {lic.status})")
    return _set_status(lic, "suspended", _reason(reason), actor, "licence.suspended")


def resume(identifier: str, actor: str) -> Licence:
    lic = find(identifier)
    if lic.status != "suspended":
        raise BadTransition(f"only a suspended licence can be resumed (this one is {lic.status})")
    return _set_status(lic, "valid", "", actor, "licence.resumed")


def revoke(identifier: str, reason: str, actor: str) -> Licence:
    lic = find(identifier)
    if lic.status in ("revoked", "superseded"):
        raise BadTransition(f"the licence is already {lic.status}")
    return _set_status(lic, "revoked", _reason(reason), actor, "licence.revoked")


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("a reason is required", "reason_required")
    return reason[:500]


def change(identifier: str, fields: dict, actor: str, *, holder_name: str | None = None,
           valid_until: date | str | None = None, reason: str = "") -> Licence:
    """A new version (version + 1, same serial) with changed data; the old one is superseded."""
    old = find(identifier)
    if old.status not in ("valid", "suspended"):
        raise BadTransition(f"a {old.status} licence cannot be changed")
    t = old.type
    data = check_data(t, {**(old.data or {}), **(fields or {})}, old.holder_id)
    until = valid_until_for(t, old.valid_from, valid_until) if valid_until else old.valid_until
    new = _create_version(t, old.issuer_uscc, old.issuer_name, old.holder_id,
                          (holder_name or old.holder_name).strip(), data, today(), until, actor,
                          serial=old.serial, version=old.version + 1, department_uscc=department_of(old))
    new.valid_from = old.valid_from
    old.status, old.superseded_by, old.status_changed_at = "superseded", new.identifier, utcnow()
    old.status_reason = reason or "变更"
    audit.record("licence.changed", actor=actor, object=f"licence:{old.identifier}",
                 detail={"new": new.identifier, "reason": reason, "changed": sorted((fields or {}).keys())})
    return new


def expire_due(actor: str = "system") -> list[Licence]:
    """Mark valid licences past their end date as expired (each audited)."""
    rows = db.session.execute(select(Licence).where(Licence.status == "valid",
                                                    Licence.valid_until.is_not(None),
                                                    Licence.valid_until < today())).scalars().all()
    for lic in rows:
        _set_status(lic, "expired", "有效期届满", actor, "licence.expired")
    return list(rows)


def public_view(lic) -> dict:
    st = public_status(lic.status, lic.valid_until)
    out = {"valid": st == "valid", "status": st, "licence": {
        "id": lic.identifier, "type": lic.type_code, "type_name": lic.type_name,
        "holder_name": mask_name(lic.holder_name), "issuer": lic.issuer_name,
        "issued_at": lic.issued_on.isoformat(),
        "valid_until": lic.valid_until.isoformat() if lic.valid_until else None}}
    if lic.status == "superseded" and lic.superseded_by:
        out["superseded_by"] = lic.superseded_by
    return out


_PUBLIC_COLUMNS = (Licence.identifier, Licence.type_code, Licence.type_name, Licence.holder_name,
                   Licence.issuer_name, Licence.issued_on, Licence.valid_until, Licence.status,
                   Licence.superseded_by, Licence.holder_kind, Licence.holder_id, Licence.number,
                   Licence.status_changed_at)


_LOOKUP = select(*_PUBLIC_COLUMNS).where(Licence.verify_code == bindparam("code"))


def lookup_code(code: str):
    """The hot path behind /v/<code>: one lookup on a unique index, only the columns shown.

    A Core connection straight from the pool: the ORM session's bookkeeping costs more
    than the query itself on this path.
    """
    if not code or len(code) > 32:
        return None
    with read_connection() as conn:
        return conn.execute(_LOOKUP, {"code": code}).first()


def metadata(lic: Licence) -> dict:
    """GB/T 36903 metadata."""
    return {"ZZMC": lic.type_name, "ZZLXDM": lic.type_code, "ZZBH": lic.number, "ZZBS": lic.identifier,
            "ZZBFJG": lic.issuer_name, "ZZBFJGDM": lic.issuer_uscc, "ZZBFRQ": lic.issued_on.isoformat(),
            "ZZYXQQSRQ": lic.valid_from.isoformat(),
            "ZZYXQJZRQ": lic.valid_until.isoformat() if lic.valid_until else "长期",
            "CZZT": lic.holder_name, "CZZTDM": lic.holder_id, "CZZTDMLX": HOLDER_CODE_TYPE[lic.holder_kind],
            "ZZZT": public_status(lic.status, lic.valid_until), "XYDJ": "A"}


def full_view(lic: Licence) -> dict:
    return {"id": lic.identifier, "type": lic.type_code, "type_name": lic.type_name,
            "status": public_status(lic.status, lic.valid_until), "holder_id": lic.holder_id,
            "holder_name": lic.holder_name, "issuer": lic.issuer_name, "issued_at": lic.issued_on.isoformat(),
            "valid_until": lic.valid_until.isoformat() if lic.valid_until else None,
            "version": f"{lic.version:03d}", "data": dict(lic.data or {}), "metadata": metadata(lic)}


# ---------------------------------------------------------------- holders and wallets


def holder_ids_for(user) -> list[str]:
    """The citizen's ID number and the USCCs of the enterprises they represent or administer."""
    from people.models import Organisation, StaffRole

    ids = [user.id_number]
    orgs = db.session.execute(select(Organisation.uscc).where(Organisation.legal_rep_id == user.id)).scalars()
    ids.extend(orgs)
    admin = db.session.execute(select(Organisation.uscc).join(StaffRole, StaffRole.org_id == Organisation.id)
                               .where(StaffRole.user_id == user.id, StaffRole.role == "admin")).scalars()
    ids.extend(admin)
    from people.enterprise import managed_usccs  # enterprise administrators the legal rep appointed

    ids.extend(managed_usccs(user))
    return list(dict.fromkeys(ids))


def licences_of(holder_ids: list[str], type_ref: str | None = None, current_only: bool = True
                ) -> list[Licence]:
    q = select(Licence).where(Licence.holder_id.in_(holder_ids))
    if type_ref:
        q = q.where(Licence.type_code == get_type(type_ref).code)
    if current_only:
        q = q.where(Licence.status != "superseded")
    return list(db.session.execute(q.order_by(Licence.created_at.desc(), Licence.id.desc())).scalars())


def licence_for_user(user, identifier: str) -> Licence:
    lic = find(identifier)
    if lic.holder_id not in holder_ids_for(user):
        raise LicenceNotFound(f"no e-licence {identifier!r}")
    return lic


def access_log(lic: Licence) -> list[LicenceAccess]:
    ids = [lic.id]
    return list(db.session.execute(select(LicenceAccess).where(LicenceAccess.licence_id.in_(ids))
                                   .order_by(LicenceAccess.at.desc())).scalars())


# ---------------------------------------------------------------- sharing (GB/T 36906)


@dataclass(frozen=True)
class Caller:
    """A department system calling the sharing API, with why and for which service item."""

    client_id: str
    department: str
    system: str
    purpose: str
    service_item: str


def record_access(lic: Licence, caller: Caller, operation: str) -> None:
    db.session.add(LicenceAccess(licence_id=lic.id, at=utcnow(), client_id=caller.client_id,
                                 department=caller.department, system=caller.system, operation=operation,
                                 purpose=caller.purpose, service_item=caller.service_item))


def audit_call(caller: Caller, operation: str, obj: str = "", outcome: str = "success", **detail) -> None:
    audit.record(f"licence.api.{operation}", actor=f"client:{caller.client_id}", object=obj, outcome=outcome,
                 detail={"purpose": caller.purpose, "service_item": caller.service_item, **detail})


def create_download_link(lic: Licence, caller: Caller, minutes: int | None = None) -> tuple[str, datetime]:
    minutes = minutes or current_app.config.get("TONGBAN_LICENCE_LINK_MINUTES", 5)
    raw = token(32)
    expires = utcnow() + timedelta(minutes=minutes)
    db.session.add(DownloadLink(token_hash=digest(raw), licence_id=lic.id, client_id=caller.client_id,
                                department=caller.department, purpose=caller.purpose,
                                service_item=caller.service_item, created_at=utcnow(), expires_at=expires))
    return raw, expires


_MARK_DEPARTMENT = re.compile(r"[^0-9A-Za-z\u4e00-\u9fff（）()·]")


def copy_marking(link: DownloadLink, lic: Licence, now: datetime) -> tuple[str, str]:
    """The watermark drawn on a shared copy and the reason sealed with it: a fixed wording, the
    department the client was registered for (admin-set; letters, digits, Chinese characters and
    brackets only, at most 30) and the link's reference number. The caller's purpose and service
    item are in the access log under that number, never in the document the issuer seals."""
    department = _MARK_DEPARTMENT.sub("", link.department or "")[:30] or "共享调用方"
    ref = f"GX{link.id:08d}"
    stamp = now.strftime("%Y-%m-%d %H:%M")
    return f"仅供{department}办事使用 共享编号{ref} {stamp}", f"共享下载 {lic.identifier} 共享编号{ref}"


def redeem_download_link(raw: str, fmt: str | None = None) -> tuple[Licence, bytes]:
    """Claim the link atomically (once only), then build the watermarked, sealed copy: PDF, or OFD
    (``fmt``; by default the licence type's file format)."""
    link = db.session.execute(select(DownloadLink).where(DownloadLink.token_hash == digest(raw or ""))
                              ).scalar_one_or_none()
    now = utcnow()
    if link is None or link.expires_at <= now:
        raise LicenceNotFound("this download link does not exist or has expired")
    claimed = db.session.execute(update(DownloadLink).where(DownloadLink.id == link.id,  # type: ignore[attr-defined]
                                                            DownloadLink.used_at.is_(None))
                                 .values(used_at=now).execution_options(synchronize_session=False)).rowcount
    if not claimed:
        raise LicenceNotFound("this download link was already used")
    lic = db.session.get(Licence, link.licence_id)
    mark, reason = copy_marking(link, lic, now)
    from .ofd import file_format, sealed_ofd

    if (fmt or file_format(lic.type)) == "ofd":
        data = sealed_ofd(lic, actor=f"client:{link.client_id}", purpose=reason, watermark=mark)
    else:
        data = _sealed_pdf(lic, lic.type, f"client:{link.client_id}", purpose=reason, watermark=mark)
        link.copy_sha256 = verification.signed_sha256(data)
    caller = Caller(link.client_id, link.department, "", link.purpose, link.service_item)
    record_access(lic, caller, "fetch")
    audit_call(caller, "fetched", f"licence:{lic.identifier}")
    return lic, data


def identifier_in_pdf(data: bytes) -> str | None:
    """The identifier (Keywords ``ZZBS:<id>``) of the revision the certifying seal covers, if any.

    Never a search of the whole file: bytes appended after the seal name nothing.
    """
    rev = verification.signed_revision(data or b"")
    return rev.identifier if rev else None


def verify_file(data: bytes) -> dict:
    """The verdict on a licence PDF (or OFD: licence/ofd.py) someone brings: bound to the document we
    issued (see verification)."""
    from seal.ofd import is_ofd

    if is_ofd(data):
        from .ofd import verify_file as verify_ofd_file

        return verify_ofd_file(data)
    return verification.verify_licence_document(data)


def verify_identifier(identifier: str) -> dict:
    if identifiers.parse(identifier) is None:
        return {"valid": False, "status": "unknown", "licence": None, "seal": None}
    lic = db.session.execute(select(Licence).where(Licence.identifier == identifier.strip().upper())
                             ).scalar_one_or_none()
    if lic is None:
        return {"valid": False, "status": "unknown", "licence": None, "seal": None}
    view = public_view(lic)
    seal = _seal_services().verify_pdf(lic.pdf)
    return {"valid": view["valid"] and bool(seal.get("valid")), "status": view["status"],
            "licence": view["licence"], "seal": seal}



__all__ = ["PUBLIC_STATUSES", "Caller", "change", "expire_due", "find", "issue", "list_types", "lookup_code",
           "public_view", "resume", "revoke", "suspend", "verify_file", "verify_identifier"]
