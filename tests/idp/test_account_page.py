"""The account page in words (devices, permissions, links), the home and developers pages."""

from __future__ import annotations

import pytest

from people.devices import device_label
from tests.flask_flows import login

CHROME_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")
WECHAT_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Mobile/15E148 MicroMessenger/8.0.44")


@pytest.mark.parametrize("ua, label", [
    (CHROME_WIN, "Chrome · Windows"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
     "Safari/605.1.15", "Safari · Mac"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
     "Safari/537.36 Edg/120.0", "Edge · Windows"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
     "Chrome · Android"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "Firefox · Linux"),
    ("python-requests/2.31", "Program"),
    ("", "Unknown device"),
])
def test_device_label(app, ua, label):
    with app.test_request_context(headers={"Cookie": "lang=en"}):
        assert device_label(ua) == label


def test_account_page_shows_devices_permissions_in_words_and_links(app, browser, citizen):
    from idp import consents
    from tongban.extensions import db

    consents.grant(citizen, "portal-x", ["openid", "phone", "profile"])
    db.session.commit()
    c = browser()  # Chinese
    assert login(c, headers={"User-Agent": CHROME_WIN}).status_code == 302
    page = c.get("/account?lang=zh_CN", headers={"User-Agent": CHROME_WIN}).get_data(as_text=True)
    assert "Chrome · Windows" in page
    assert "<table" not in page  # rows that wrap, no sideways scrolling on a phone
    assert 'href="/wallet"' in page and 'href="/enterprise/"' in page
    assert "openid" not in page.split('id="systems"')[1].split("</section>")[0]  # no scope names


def test_account_page_in_english_names_the_permissions(app, browser, citizen):
    from idp import consents
    from tongban.extensions import db

    consents.grant(citizen, "portal-x", ["openid", "phone", "profile"])
    db.session.commit()
    c = browser("en")
    login(c)
    page = c.get("/account").get_data(as_text=True)
    assert "Your phone number、Your name, gender and date of birth" in page


def test_developers_page_has_the_technical_links_and_home_the_citizen_ones(client):
    dev = client.get("/developers").get_data(as_text=True)
    for link in ("/.well-known/openid-configuration", "/jwks.json", "/api/v1/openapi.json", "/ca/root.pem"):
        assert f'href="{link}"' in dev
    home = client.get("/").get_data(as_text=True)
    assert 'href="/wallet"' in home and 'href="/account"' in home and 'href="/developers"' in home
