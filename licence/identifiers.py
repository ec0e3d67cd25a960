"""GB/T 36904-2018 e-licence identifiers and their ISO 7064 MOD 37,36 check character."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum.iso7064 import mod_37_36

PREFIX = "1.2.156.3005.2"
SERIAL_WIDTH = 7
_PATTERN = re.compile(
    r"1\.2\.156\.3005\.2\.([0-9A-Z]{21})\.([0-9A-Z]{18})\.([0-9]+)\.([0-9]{3})\.([0-9A-Z])")


def mod37_36(data: str) -> str:
    """ISO 7064 hybrid MOD 37,36 check character over ``data`` (0-9, A-Z), by python-stdnum."""
    return mod_37_36.calc_check_digit(data)


@dataclass(frozen=True)
class LicenceId:
    type_code: str
    issuer_uscc: str
    serial: str
    version: str
    check: str

    def __str__(self) -> str:
        return ".".join((PREFIX, self.type_code, self.issuer_uscc, self.serial, self.version, self.check))


def build(type_code: str, issuer_uscc: str, serial: int, version: int = 1) -> LicenceId:
    s, v = str(serial).zfill(SERIAL_WIDTH), f"{version:03d}"
    return LicenceId(type_code, issuer_uscc, s, v, mod37_36(type_code + issuer_uscc + s + v))


def parse(raw: str) -> LicenceId | None:
    """A well-formed identifier with a correct check character, else None."""
    m = _PATTERN.fullmatch((raw or "").strip().upper())
    if not m:
        return None
    lid = LicenceId(*m.groups())
    return lid if mod37_36("".join(m.groups()[:4])) == lid.check else None
