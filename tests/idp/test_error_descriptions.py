"""OAuth error descriptions built from request values stay within RFC 6749 §5.2's characters
(Authlib raises ValueError otherwise: a 500). Found by the API fuzzer (tests/tongban/test_fuzz_api.py)."""

from __future__ import annotations

import re

import pytest

from idp.errors import shown
from tests.flask_flows import basic

ALLOWED = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")
NAME = "参数·±"


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/device_authorization", "/oauth/introspect",
                                  "/oauth/revoke", "/oauth/bc-authorize", "/oauth/par"])
def test_a_repeated_non_ascii_parameter_is_a_400(client, make_client, path):
    cid, secret = make_client(grant_types=["client_credentials"])
    body = f"{NAME}=1&{NAME}=2&grant_type=client_credentials&token=x&scope=openid&response_type=code"
    r = client.post(path, data=body.encode(), headers={**basic(cid, secret),
                                                       "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, (path, r.status_code, r.data[:200])
    assert r.json["error"] == "invalid_request"
    assert ALLOWED.match(r.json["error_description"]), r.json["error_description"]


def test_shown_keeps_printable_ascii_and_encodes_the_rest():
    assert shown("scope") == "scope"
    assert shown('a"b\\c%d é') == "a%22b%5Cc%25d %C3%A9"
    assert shown("\ud800") == "%5Cud800"  # a lone surrogate (a JSON request object can hold one)
    assert shown("x" * 100) == "x" * 40
