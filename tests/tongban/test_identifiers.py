"""Check characters through python-stdnum (tongban/identifiers.py, licence/identifiers.py):
published test vectors, and every single-character change refused."""

from __future__ import annotations

import pytest

from licence import identifiers as licence_ids
from tongban.errors import ValidationError
from tongban.identifiers import id_check_char, is_id_number, is_uscc, parse_id_number, uscc_check_char

# GB 11643-1999's own example, and ordinary valid numbers
ID_NUMBERS = ["11010519491231002X", "110105198001010016", "110102198506150023", "110101199003071233"]
# GB 32100-2015 codes (the first is python-stdnum's own test vector)
USCCS = ["91110000600037341L", "91350100M000100Y43", "11100000000013338W"]


@pytest.mark.parametrize("number", ID_NUMBERS)
def test_id_number_vectors(number):
    assert id_check_char(number[:17]) == number[17]
    parsed = parse_id_number(number)
    assert parsed.value == number and parsed.region == number[:6]


@pytest.mark.parametrize("number", ID_NUMBERS)
def test_id_number_any_changed_digit_is_refused(number):
    for i in range(17):
        digit = str((int(number[i]) + 1) % 10)
        changed = number[:i] + digit + number[i + 1:]
        if i in range(6, 14):  # the birth date may become impossible: refused either way
            assert not is_id_number(changed) or id_check_char(changed[:17]) == changed[17]
        else:
            assert not is_id_number(changed), changed
    with pytest.raises(ValidationError, match="check digit"):
        parse_id_number(number[:17] + ("0" if number[17] != "0" else "1"))


def test_id_number_lower_case_x_is_normalised():
    assert parse_id_number("11010519491231002x").value == "11010519491231002X"


@pytest.mark.parametrize("code", USCCS)
def test_uscc_vectors(code):
    assert uscc_check_char(code[:17]) == code[17]
    assert is_uscc(code) and is_uscc(code.lower())


def test_uscc_changed_character_is_refused():
    code = USCCS[0]
    for i in range(17):
        changed = code[:i] + ("1" if code[i] != "1" else "2") + code[i + 1:]
        assert not is_uscc(changed), changed


def test_check_helpers_refuse_wrong_shapes():
    with pytest.raises(ValueError):
        id_check_char("1101051949123100")
    with pytest.raises(ValueError):
        uscc_check_char("9111000060003734I")  # I is not in the alphabet


def test_licence_identifier_mod_37_36():
    """GB/T 36904-2018's example identifier; ISO 7064 MOD 37,36 through stdnum."""
    from stdnum.iso7064 import mod_37_36

    data = "11100000000013338W00111330800002724839W0000001001"
    assert licence_ids.mod37_36(data) == "4"
    assert mod_37_36.is_valid(data + "4")
    assert not mod_37_36.is_valid(data + "5")
