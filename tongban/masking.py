"""Personal data masking for public pages and logs (docs/endpoints.md)."""

from __future__ import annotations

import re


def mask_name(name: str | None) -> str:
    """Keep the first character: 张三丰 -> 张**."""
    if not name:
        return ""
    return name[0] + "*" * max(len(name) - 1, 1)


def mask_name_one(name: str | None) -> str:
    """Mask one character only, what a checker must still compare: 张三丰 -> 张*丰, 张三 -> 张*."""
    if not name:
        return ""
    if len(name) == 1:
        return "*"
    return name[0] + "*" + name[2:]


def mask_number(value: str | None) -> str:
    """Keep the first 3 and last 4 characters: 110***********002X, 138****5678."""
    if not value:
        return ""
    if len(value) <= 7:
        return value[:1] + "*" * (len(value) - 1)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


_ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx])(?![0-9A-Za-z])")
# a mobile number alone, or after the +86 / 0086 country code (+8613800138000)
_PHONE_RE = re.compile(r"(?:(?<!\d)|(?<=\+86)|(?<=(?<!\d)0086))(1[3-9]\d{9})(?!\d)")


def mask_text(text: str | None) -> str:
    """Mask every ID number and mobile number found in free text."""
    if not text:
        return text or ""
    text = _ID_RE.sub(lambda m: mask_number(m.group(1)), text)
    return _PHONE_RE.sub(lambda m: mask_number(m.group(1)), text)
