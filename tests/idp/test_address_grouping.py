"""Per-address limits count an IPv6 /64 as one address (and bound each /48), and an address is
familiar to an account by the same grouping: a device rotating its temporary IPv6 address
inside its /64 is not locked out, while an attacker cannot spread over a /64 to escape limits."""

from __future__ import annotations

import re

import pytest

from people import accounts
from tests.conftest import CITIZEN_ID, PASSWORD
from tongban import ratelimit
from tongban.extensions import db

WRONG = "Wrong-Passw0rd!"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _lock_account_from_ipv4(app, first: int = 1) -> None:
    """The reviewer's attack: 50 wrong passwords from 10 IPv4 addresses, 5 each."""
    per_pair = app.config["TONGBAN_LOCKOUT_THRESHOLD"]
    wanted = app.config["TONGBAN_LOCKOUT_ACCOUNT_THRESHOLD"]
    for a in range(-(-wanted // per_pair)):
        for _ in range(per_pair):
            accounts.authenticate(CITIZEN_ID, WRONG, ip=f"198.51.100.{a + first}")
            db.session.commit()


def test_client_key_groups_ipv6_by_64():
    assert ratelimit.client_key("2001:db8:1:2::aaaa") == ratelimit.client_key("2001:DB8:1:2:ffff:1:2:3")
    assert ratelimit.client_key("2001:db8:1:2::aaaa") == "2001:db8:1:2::/64"
    assert ratelimit.client_key("2001:db8:1:3::aaaa") != ratelimit.client_key("2001:db8:1:2::aaaa")
    assert ratelimit.client_key("::ffff:198.51.100.7") == "198.51.100.7" == ratelimit.client_key("198.51.100.7")
    assert ratelimit.wide_client_key("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert ratelimit.wide_client_key("198.51.100.7") is None and ratelimit.wide_client_key("") is None
    assert accounts.login_source("2001:db8:1:2::aaaa") == "2001:db8:1:2::/64"


def test_a_rotated_ipv6_address_in_the_same_64_stays_familiar(app, citizen):
    assert accounts.authenticate(CITIZEN_ID, PASSWORD, ip="2001:db8:1:2::aaaa").ok
    db.session.commit()
    _lock_account_from_ipv4(app)
    # the citizen's device rotated its temporary address inside the same /64
    r = accounts.authenticate(CITIZEN_ID, PASSWORD, ip="2001:db8:1:2::bbbb")
    db.session.commit()
    assert r.ok, (r.reason, r.locked_until)
    # the account-wide lock still stands for unfamiliar sources: another /64, the attacker's IPv4
    _lock_account_from_ipv4(app, first=100)
    for ip in ("2001:db8:1:3::aaaa", "198.51.100.200"):
        r = accounts.authenticate(CITIZEN_ID, PASSWORD, ip=ip)
        db.session.commit()
        assert not r.ok and r.reason == "locked", ip


def _login_post(client, ip: str, login: str = "110105198001010016"):
    page = client.get("/login?lang=en")
    token = _CSRF.search(page.get_data(as_text=True)).group(1)
    return client.post("/login?lang=en", data={"csrf_token": token, "login": login, "password": WRONG,
                                                "next": ""}, environ_base={"REMOTE_ADDR": ip})


@pytest.fixture
def low_ip_rate(app):
    keys = ("TONGBAN_LOGIN_RATE_PER_IP", "TONGBAN_LOGIN_RATE_WINDOW", "TONGBAN_RATE_IPV6_48_FACTOR")
    saved = {k: app.config[k] for k in keys}
    app.config.update(TONGBAN_LOGIN_RATE_PER_IP=3, TONGBAN_LOGIN_RATE_WINDOW=3600, TONGBAN_RATE_IPV6_48_FACTOR=2)
    yield 3
    app.config.update(saved)


def test_login_rate_counts_a_64_as_one_address(app, browser, low_ip_rate):
    client = browser()
    # the attacker picks a fresh address of its /64 for every try
    codes = [_login_post(client, f"2001:db8:1:2::{n + 1:x}").status_code for n in range(low_ip_rate + 1)]
    assert codes == [401] * low_ip_rate + [429]
    assert _login_post(client, "2001:db8:1:2:ffff:ffff:ffff:ffff").status_code == 429
    # another /64 of the same /48 still has its own allowance, up to the /48's (3 x 2 = 6)
    codes = [_login_post(client, f"2001:db8:1:{n + 3:x}::1").status_code for n in range(3)]
    assert codes == [401, 429, 429]  # 5 counted in the /48 before, 6 is the /48's limit
    assert _login_post(client, "2001:db8:1:ff::1").status_code == 429
    # another /48, and IPv4, are not affected
    assert _login_post(client, "2001:db8:2:2::1").status_code == 401
    assert _login_post(client, "198.51.100.77").status_code == 401


def test_qr_start_rate_counts_a_64_as_one_address(app, browser):
    saved = app.config["TONGBAN_QR_RATE_PER_IP"]
    app.config["TONGBAN_QR_RATE_PER_IP"] = 2
    try:
        client = browser()
        page = client.get("/login?lang=en")
        token = _CSRF.search(page.get_data(as_text=True)).group(1)
        codes = [client.post("/qr/start", headers={"X-CSRFToken": token},
                             environ_base={"REMOTE_ADDR": f"2001:db8:9:9::{n + 1:x}"}).status_code for n in range(3)]
    finally:
        app.config["TONGBAN_QR_RATE_PER_IP"] = saved
    assert codes == [200, 200, 429], codes
