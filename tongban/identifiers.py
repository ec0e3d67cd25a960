"""National identifiers: GB 11643 ID numbers, GB 32100 USCC.

The check characters come from python-stdnum (``stdnum.cn.ric``, ``stdnum.cn.uscc``); this
module adds what the service needs on top: what an ID number encodes, messages in Chinese."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from flask_babel import lazy_gettext as _l
from stdnum.cn import ric, uscc

from .errors import ValidationError
from .i18n import localised

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100: 0-9 and A-Y without I, O, S, V, Z


@dataclass(frozen=True)
class IdNumber:
    value: str
    birthdate: date
    gender: str  # "male" | "female" (OIDC gender claim values)
    region: str


def id_check_char(first17: str) -> str:
    """The GB 11643 (ISO 7064 MOD 11-2) check character of the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("17 digits expected")
    return ric.calc_check_digit(first17 + "0")  # (stdnum's takes the number with a check digit)


def parse_id_number(raw: str, today: date | None = None) -> IdNumber:
    """Validate a citizen ID number (GB 11643-1999) and return what it encodes."""
    value = (raw or "").strip().upper()
    if len(value) != 18 or not value[:17].isdigit() or not (value[17].isdigit() or value[17] == "X"):
        raise ValidationError(localised(_l("ID number must be 17 digits and a check digit or X")),
                              "invalid_id_number")
    try:
        birth = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise ValidationError(localised(_l("ID number has an impossible birth date")), "invalid_id_number") from None
    if birth > (today or date.today()) or birth.year < 1850:
        raise ValidationError(localised(_l("ID number has an impossible birth date")), "invalid_id_number")
    if id_check_char(value[:17]) != value[17]:
        raise ValidationError(localised(_l("ID number check digit is wrong")), "invalid_id_number")
    gender = "male" if int(value[16]) % 2 else "female"
    return IdNumber(value=value, birthdate=birth, gender=gender, region=value[:6])


def is_id_number(raw: str) -> bool:
    try:
        parse_id_number(raw)
    except ValidationError:
        return False
    return True


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character of the first 17 characters."""
    if len(first17) != 17 or any(c not in USCC_ALPHABET for c in first17):
        raise ValueError("17 characters of the USCC alphabet expected")
    return uscc.calc_check_digit(first17)


def validate_uscc(raw: str) -> str:
    """Validate a unified social credit code (GB 32100-2015); returns it normalised."""
    value = (raw or "").strip().upper()
    if len(value) != 18 or any(c not in USCC_ALPHABET for c in value):
        raise ValidationError(
            localised(_l("USCC must be 18 characters of 0-9 and A-Y without I, O, S, V, Z")), "invalid_uscc"
        )
    if not value[2:8].isdigit():
        raise ValidationError(localised(_l("USCC positions 3-8 must be an administrative division code")),
                              "invalid_uscc")
    if uscc_check_char(value[:17]) != value[17]:
        raise ValidationError(localised(_l("USCC check character is wrong")), "invalid_uscc")
    return value


def is_uscc(raw: str) -> bool:
    try:
        validate_uscc(raw)
    except ValidationError:
        return False
    return True
