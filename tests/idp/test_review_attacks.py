"""Security review: attacks on the modern OAuth profile, each once refused."""

from __future__ import annotations

import pytest

from tests.idp.test_token_exchange import (
    AT,
    TE,
    _citizen_token,
    _claims,
    _exchange,
    _introspect,
    disco,  # noqa: F401  (fixture)
)

SALT = bytes(range(32, 64))


@pytest.fixture
def salted(app):
    app.config["TONGBAN_PAIRWISE_SALT"] = SALT
    app.extensions.pop("tongban.pairwise_salt", None)
    yield
    app.extensions.pop("tongban.pairwise_salt", None)


def test_pairwise_client_cannot_learn_public_sub_by_token_exchange(app, salted, live_server, disco,  # noqa: F811
                                                                    citizen, make_client):
    """A pairwise system exchanges its citizen token for a public target: the exchanged JWT it is
    handed must not name the citizen by their public sub (or the target's pairwise one)."""
    from idp.pairwise import pairwise_sub

    b = make_client(client_id="dept-pub", name="公开系统", department="人社局", redirect_uris=[],
                    grant_types=["client_credentials"], scopes=["openid", "profile"])
    a = make_client(client_id="dept-pw", name="成对系统", department="公积金", first_party=True,
                    subject_type="pairwise", grant_types=["authorization_code", TE],
                    scopes=["openid", "profile"], exchange_targets=["dept-pub"])
    subject = _citizen_token(live_server, disco, a, scope="openid profile")
    mine = _claims(subject["access_token"])["sub"]
    assert mine == pairwise_sub("127.0.0.1", citizen.sub) != citizen.sub
    out = _exchange(disco, a, subject["access_token"], audience="dept-pub", subject_token_type=AT)
    import base64
    import json

    payload = out["access_token"].split(".")[1]
    seen_by_a = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert citizen.sub not in json.dumps(seen_by_a)  # the public sub is never readable by the pairwise system
    assert seen_by_a["sub"] == mine
    # the target still knows who it is (its own view of the citizen), and the APIs still find them
    assert _introspect(disco, b, out["access_token"])["sub"] == citizen.sub
    from idp.tokens import decode_access_token

    assert decode_access_token(out["access_token"]).sub == citizen.sub
