from licence import identifiers
from licence.catalogue import TYPES
from tongban.identifiers import is_uscc

VECTOR = "1.2.156.3005.2.11100000000013338W001.11330800002724839W.0000001.001.4"


def test_gbt_36904_vector():
    assert str(identifiers.build("11100000000013338W001", "11330800002724839W", 1, 1)) == VECTOR
    assert identifiers.mod37_36("11100000000013338W00111330800002724839W0000001001") == "4"
    parsed = identifiers.parse(VECTOR)
    assert parsed and parsed.serial == "0000001" and parsed.version == "001"


def test_bad_check_or_shape_is_refused():
    assert identifiers.parse(VECTOR[:-1] + "5") is None
    assert identifiers.parse(VECTOR.replace(".0000001.", ".0000002.")) is None
    assert identifiers.parse("1.2.156.3005.2.x") is None


def test_catalogue_codes():
    assert len(TYPES) == 14
    assert len({t["code"] for t in TYPES}) == 14
    for t in TYPES:
        assert len(t["code"]) == 21 and t["code"][18:].isdigit()
        assert is_uscc(t["code"][:18]), t["name"]
        assert t["holder_kind"] in ("citizen", "organisation")
