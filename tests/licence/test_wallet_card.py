"""The wallet shows each licence as its card (the sealed PDF's first page) and a short-lived
offline code that the page renews: what binds the picture and the code to the licence, to its
holder and to its current state."""

from __future__ import annotations

import io
import re
import time

import zxingcpp
from freezegun import freeze_time
from PIL import Image

from licence import offline, services
from tests.conftest import OTHER_ID
from tests.licence.test_http import _login
from tongban.extensions import db


def _verify(token: str, now: int | None = None) -> dict:
    """Checked as a verifier would: against the published key set (JWKs), not our key objects."""
    from joserfc.jwk import ECKey

    keys = {k["kid"]: ECKey.import_key(k).raw_value for k in offline.verifier_keys()["keys"]}
    return offline.verify_token(token, keys, now=now)


def _qr_texts(png: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def test_the_card_is_the_licence_page_with_its_own_qr(client, citizen, issue):
    lic = issue("结婚证")
    _login(client)
    page = client.get("/wallet").get_data(as_text=True)
    src = f"/wallet/{lic.identifier}/card.png?s=valid"
    assert src in page
    r = client.get(src)
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.headers["Cache-Control"].startswith("private")
    img = Image.open(io.BytesIO(r.data))
    assert img.width == 900 and 500 < img.height < 700  # a landscape card
    # the card carries the licence's own verification QR: bound to this licence
    assert services.verify_url(lic.verify_code) in _qr_texts(r.data)


def test_a_revoked_card_is_faded_and_stamped_and_changes_url(client, citizen, issue):
    lic = issue("结婚证")
    _login(client)
    valid_png = client.get(f"/wallet/{lic.identifier}/card.png").data
    services.revoke(lic.identifier, "登记错误", "test")
    db.session.commit()
    page = client.get("/wallet").get_data(as_text=True)
    assert f"/wallet/{lic.identifier}/card.png?s=revoked" in page  # a new URL: no cached valid picture
    revoked_png = client.get(f"/wallet/{lic.identifier}/card.png?s=valid").data  # the query is only a cache key
    assert revoked_png != valid_png

    def redness(png):
        im = Image.open(io.BytesIO(png)).convert("RGB").resize((90, 64))
        return sum(1 for r, g, b in im.getdata() if r > 150 and g < 90 and b < 90)

    def colour(png):
        im = Image.open(io.BytesIO(png)).convert("RGB").resize((90, 64))
        return sum(max(p) - min(p) for p in im.getdata())

    assert redness(revoked_png) > 0  # the red stamp across it
    assert colour(revoked_png) < colour(valid_png)  # faded


def test_the_card_and_code_of_someone_elses_licence_do_not_exist(client, citizen, issue):
    other = issue("残疾人证", holder=(OTHER_ID, "王五"))
    _login(client)
    assert client.get(f"/wallet/{other.identifier}/card.png").status_code == 404
    assert client.get(f"/wallet/{other.identifier}/code").status_code == 404
    client.post("/logout")
    anon = client.application.test_client()
    r = anon.get(f"/wallet/{other.identifier}/code")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_the_code_is_short_lived_and_renewed(app, client, citizen, issue, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_WALLET_CODE_SECONDS", 120)
    lic = issue("结婚证")
    _login(client)
    page = client.get(f"/wallet/{lic.identifier}").get_data(as_text=True)
    assert '<script src="/static/js/wallet-code.js" defer></script>' in page
    assert re.search(r"<script>|style=", page) is None  # CSP: no inline script or style
    token = re.search(r'id="wallet-code-token">([^<]+)<', page).group(1)
    expires = int(re.search(r'data-expires="(\d+)"', page).group(1))
    now = int(time.time())
    assert expires - now <= 120 and offline.expires_at(token) == expires
    claims = _verify(token)
    assert claims["licence"]["id"] == lic.identifier and not claims["expired"]
    assert _verify(token, now=expires + 1)["expired"]  # a photo of it stops working

    with freeze_time(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now + 100))):
        fresh = client.get(f"/wallet/{lic.identifier}/code")
        assert fresh.status_code == 200 and fresh.headers["Cache-Control"] == "no-store"
        body = fresh.get_json()
    assert body["expires_at"] > expires and body["token"] != token and abs(body["now"] - (now + 100)) <= 2
    assert body["qr"].startswith("data:image/svg+xml;base64,")
    assert _verify(body["token"], now=now + 100)["licence"]["id"] == lic.identifier


def test_no_code_for_a_licence_that_is_not_valid(client, citizen, issue):
    lic = issue("结婚证")
    _login(client)
    assert client.get(f"/wallet/{lic.identifier}/code").status_code == 200
    services.suspend(lic.identifier, "核查中", "test")
    db.session.commit()
    r = client.get(f"/wallet/{lic.identifier}/code")
    body = r.get_json()
    assert r.status_code == 409 and body["error"] == "licence_not_valid" and "token" not in body
    assert body["state"] in ("suspended", "revoked") and body["label"]


def test_the_wallet_code_lifetime_never_exceeds_a_day(app, client, citizen, issue, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_WALLET_CODE_SECONDS", 10 * 86400)
    lic = issue("结婚证")
    _login(client)
    body = client.get(f"/wallet/{lic.identifier}/code").get_json()
    assert body["expires_at"] - body["now"] <= offline.TOKEN_LIFETIME
