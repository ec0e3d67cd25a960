"""Licence test helpers: issue licences quickly, and drive the consent flow for API tokens."""

from __future__ import annotations

import pytest

from tests.licence.samples import SAMPLES


@pytest.fixture
def issue(app):
    """issue(name_or_code="营业执照", **overrides) -> the committed Licence."""
    from licence import services
    from tongban.extensions import db

    def _issue(type_name: str = "营业执照", holder=None, fields=None, **kw):
        (hid, hname), data = SAMPLES[type_name]
        if holder:
            hid, hname = holder
            if fields is None and len(hid) == 18 and hid[:17].isdigit():  # another citizen: their own birth data
                from tongban.identifiers import parse_id_number

                ident = parse_id_number(hid)
                data = {**data, **{k: v for k, v in (("birth_date", ident.birthdate.isoformat()),
                                                     ("gender", "男" if ident.gender == "male" else "女"))
                                   if k in data}}
        lic = services.issue(type_name, hid, hname, fields if fields is not None else data, actor="test", **kw)
        db.session.commit()
        return lic

    return _issue


def _phone_verified() -> None:
    from people.accounts import find_user_by_login
    from tests.conftest import CITIZEN_ID
    from tongban.extensions import db

    user = find_user_by_login(CITIZEN_ID)
    if user is not None and user.assurance_level < 2:
        user.assurance_level = 2
        db.session.commit()


def user_token(live_server, make_client, scopes="openid licence:read", consent="approve", first_party=False):
    """A user access token from the authorization code flow (log-in + consent as 张三)."""
    import base64
    import hashlib
    from urllib.parse import urlencode

    import requests

    from tests.idp.helpers import REDIRECT, Browser, callback_params

    _phone_verified()  # reading licences needs L2 (idp.stepup.require_acr, TONGBAN_LICENCE_READ_ACR)
    client_id, secret = make_client(scopes=["openid", "profile", "licence:read", "licence:verify"],
                                    redirect_uris=[REDIRECT], first_party=first_party)
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = f"{live_server}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scopes,
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"})
    browser = Browser(live_server)
    step = browser.authorize(url, consent=consent)
    params = callback_params(step.url)
    if "code" not in params:
        return client_id, secret, None, step
    tok = requests.post(f"{live_server}/oauth/token", data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier}, auth=(client_id, secret)).json()
    return client_id, secret, tok["access_token"], step


def client_token(live_server, client_id, secret, scope="licence:verify"):
    import requests

    r = requests.post(f"{live_server}/oauth/token", data={"grant_type": "client_credentials", "scope": scope},
                      auth=(client_id, secret))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]
