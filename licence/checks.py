"""Checks a window clerk would make, field by field, in Chinese, all at once.

``problems()`` returns ``{form field: message}`` for the clerk console (every problem
next to its field in one go); ``cross_problems()`` holds the checks between fields
(dates that cannot lie in the future, a spouse's ID number that agrees with the spouse's
birth date and is not the holder's own, the holder's birth date and gender as the ID
number says) and is also applied by ``services.check_data`` so the API cannot skip them.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from flask_babel import lazy_gettext as _l

from tongban.errors import ValidationError
from tongban.i18n import localised
from tongban.identifiers import parse_id_number, validate_uscc

from .catalogue import TYPES

_SEED = {(t["code"], i["name"]): i for t in TYPES for i in t["items"]}
_GENDER = {"male": "男", "female": "女"}


def _(message: str, **params) -> str:
    """In the page's language (Chinese first); in English outside a request (API, CLI)."""
    return localised(_l(message, **params))


def _seed(t, it: dict) -> dict:
    """The seed catalogue's version of a data item (types stored before examples were added)."""
    return _SEED.get((t.code, it.get("name")), {})


def example(t, it: dict) -> str | None:
    """A filled-in example of the item's format (``J110105-2024-000123``), never its regular expression."""
    ex = it.get("example") or _seed(t, it).get("example")
    if ex:
        return ex
    if it.get("type") == "date":
        return "2024-03-01"
    return None


def must_be_past(t, it: dict) -> bool:
    """Dates of events that have happened (birth, registration, graduation): never after today."""
    return bool(it.get("past", _seed(t, it).get("past", False)))


def _when(it: dict, value: str) -> date | None:
    try:
        if it.get("type") == "date":
            return date.fromisoformat(value)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", value):
            return datetime.strptime(value, "%Y-%m-%d %H:%M").date()
    except ValueError:
        return None
    return None


def _id_problem(raw: str, today: date) -> str | None:
    try:
        parse_id_number(raw, today)
    except ValidationError as e:
        return e.message
    return None


def item_problem(t, it: dict, value: str, today: date) -> str | None:
    """The problem with one data item on its own, or None."""
    if not value:
        if it.get("required", True) and not it.get("default"):
            return _("Required.")
        return None
    kind = it.get("type", "text")
    ex = example(t, it)
    if kind == "date" or must_be_past(t, it):
        when = _when(it, value)
        if when is None:
            return _("Not a valid date; for example %(example)s.", example=ex or "2024-03-01")
        if must_be_past(t, it) and when > today:
            return _("This date cannot be in the future (today is %(today)s).", today=today.isoformat())
        return None
    if kind == "select" and value not in it.get("options", []):
        return _("Choose one of: %(options)s.", options="、".join(it.get("options", [])))
    if kind == "id_number":
        return _id_problem(value, today)
    if kind == "uscc":
        try:
            validate_uscc(value)
        except ValidationError as e:
            return e.message
        return None
    if it.get("format") and not re.fullmatch(it["format"], value):
        if ex:
            return _("Not in the expected form; for example %(example)s.", example=ex)
        return _("Not in the expected form.")
    if kind == "number":
        try:
            float(value)
        except ValueError:
            return _("Enter a number.")
    if len(value) > 2000:
        return _("Too long.")
    return None


def cross_problems(t, holder_id: str, fields: dict[str, str], today: date) -> dict[str, str]:
    """Problems between fields, keyed by item name (the fields themselves already well-formed)."""
    out: dict[str, str] = {}
    items = {i["name"]: i for i in t.items or []}
    holder = None
    if t.holder_kind == "citizen":
        try:
            holder = parse_id_number(holder_id, today)
        except ValidationError:
            holder = None
    for name, it in items.items():
        value = (fields.get(name) or "").strip()
        if it.get("type") != "id_number" or not value or _id_problem(value, today):
            continue
        other = parse_id_number(value, today)
        if holder is not None and other.value == holder.value:
            out[name] = _("This is the holder's own ID number; enter %(label)s.", label=it["label"])
            continue
        prefix = name[: -len("_id_number")] if name.endswith("_id_number") else None
        if prefix is None:
            continue
        birth_item = items.get(f"{prefix}_birth_date")
        birth = (fields.get(f"{prefix}_birth_date") or "").strip()
        if birth_item and birth and _when(birth_item, birth) not in (None, other.birthdate):
            out[name] = _("The ID number gives the birth date %(birth)s, not %(given)s (%(label)s).",
                          birth=other.birthdate.isoformat(), given=birth, label=birth_item["label"])
            continue
        gender = (fields.get(f"{prefix}_gender") or "").strip()
        if gender in ("男", "女") and gender != _GENDER[other.gender]:
            out[name] = _("The ID number is that of a %(gender)s person, not as chosen in %(label)s.",
                          gender=_GENDER[other.gender], label=items.get(f"{prefix}_gender", {}).get("label", ""))
    if holder is not None:
        given = (fields.get("birth_date") or "").strip()
        if "birth_date" in items and given and _when(items["birth_date"], given) not in (None, holder.birthdate):
            out["birth_date"] = _("The holder's ID number gives the birth date %(birth)s.",
                                  birth=holder.birthdate.isoformat())
        gender = (fields.get("gender") or "").strip()
        if "gender" in items and gender in ("男", "女") and gender != _GENDER[holder.gender]:
            out["gender"] = _("The holder's ID number is that of a %(gender)s person.",
                              gender=_GENDER[holder.gender])
    return out


def problems(t, holder_id: str, holder_name: str, fields: dict[str, str], valid_until: str,
             registered_name: str | None, today: date) -> dict[str, str]:
    """Every problem of a clerk's issue form, keyed by form field (``holder_id``, ``f_<item>`` …)."""
    out: dict[str, str] = {}
    holder_id = (holder_id or "").strip()
    if not holder_id:
        out["holder_id"] = _("Required.")
    else:
        try:
            if t.holder_kind == "citizen":
                parse_id_number(holder_id, today)
            else:
                validate_uscc(holder_id)
        except ValidationError as e:
            out["holder_id"] = e.message
    holder_name = (holder_name or "").strip()
    if not holder_name:
        out["holder_name"] = _("Required.")
    elif len(holder_name) > 200:
        out["holder_name"] = _("Too long.")
    elif registered_name and holder_name != registered_name:
        out["holder_name"] = _("The name does not match the one registered for this number (%(name)s).",
                               name=registered_name)
    for it in t.items or []:
        p = item_problem(t, it, (fields.get(it["name"]) or "").strip(), today)
        if p:
            out[f"f_{it['name']}"] = p
    clean = {k: (v or "").strip() for k, v in fields.items() if f"f_{k}" not in out}
    for name, p in cross_problems(t, holder_id, clean, today).items():
        out.setdefault(f"f_{name}", p)
    if valid_until:
        p = valid_until_problem(t, valid_until, today)
        if p:
            out["valid_until"] = p
    return out


def valid_until_problem(t, value: str, today: date) -> str | None:
    rule = t.validity or {}
    try:
        until = date.fromisoformat(value.strip())
    except ValueError:
        return _("Not a valid date; for example %(example)s.", example="2034-03-01")
    if until <= today:
        return _("The end of validity must be after today.")
    max_years = rule.get("max_years") or rule.get("years")
    if max_years and not rule.get("permanent"):
        try:
            limit = today.replace(year=today.year + max_years)
        except ValueError:
            limit = today.replace(year=today.year + max_years, day=28)
        if until > limit:
            return _("%(type)s is valid for at most %(years)s years.", type=t.name, years=max_years)
    return None
