import pytest

from tongban.errors import ValidationError
from tongban.identifiers import is_id_number, is_uscc, parse_id_number, validate_uscc
from tongban.masking import mask_name, mask_number, mask_text


def test_id_number_vectors():
    assert is_id_number("11010519491231002X")
    assert not is_id_number("110105194912310021")
    ident = parse_id_number("11010519491231002x")
    assert ident.value == "11010519491231002X"
    assert ident.birthdate.isoformat() == "1949-12-31"
    assert ident.gender == "female"  # position 17 is 2: even


@pytest.mark.parametrize("bad", ["", "1101051949123100", "11010519491331002X", "110105299912310025",
                                 "11010519491231002Y"])
def test_id_number_rejects(bad):
    with pytest.raises(ValidationError):
        parse_id_number(bad)


def test_uscc_vectors():
    for good in ("91350100M000100Y43", "11100000000013338W", "11330800002724839W"):
        assert is_uscc(good)
        assert validate_uscc(good.lower()) == good
    assert not is_uscc("91350100M000100Y44")
    assert not is_uscc("91350100M000100YI3")  # I is not in the alphabet


def test_masking():
    assert mask_name("张三丰") == "张**"
    assert mask_number("11010519491231002X") == "110***********002X"
    assert mask_number("13800138000") == "138****8000"
    assert mask_text("user 11010519491231002X phone 13800138000") == \
        "user 110***********002X phone 138****8000"
