"""End to end in headless Chromium: the wallet's cards and self-renewing code, logging out
everywhere from the account page (two devices, both portals), and a look at every page on a
desktop (1366x900) and a phone (390x844).

With TONGBAN_E2E_SCREENSHOTS=DIR each page of the tour is kept as
DIR/<area>-<page>-<wide|phone>.png (the README shows the main ones from docs/screenshots).
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest

from demo.data import CITIZEN, CITIZEN2, DEMO_PASSWORD, SEAL_OFFICER
from licence import offline
from tests.e2e.seed import REVOKED_REASON
from tests.e2e.shots import keep
from tests.e2e.test_browser import login_at_tongban, whoami

pytestmark = pytest.mark.xdist_group("e2e")  # the same stack as test_browser.py


def shot(page, name: str) -> None:
    """The page fits its screen (no sideways scrolling), every image on it loaded; with
    TONGBAN_E2E_SCREENSHOTS=DIR it is kept as DIR/<name>-<wide|phone>.png."""
    page.evaluate("() => Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"{page.url} is {width[0]} px wide on a {width[1]} px screen"
    broken = page.evaluate("() => Array.from(document.images)"
                           ".filter(i => i.getAttribute('src') && i.complete && !i.naturalWidth)"
                           ".map(i => i.src.slice(0, 80))")
    assert not broken, f"{page.url}: images that did not load: {broken}"
    keep(page, name)


def expected_error_page(browse, url: str, status: int) -> None:
    """Chromium logs the error status of a page it was asked for on purpose (a 404 page): that
    one console line, and only it, is not a problem."""
    line = f"status of {status} "
    browse.watch.problems[:] = [p for p in browse.watch.problems if not (line in p and f"({url})" in p)]


def wallet_hrefs(page) -> list[str]:
    hrefs = page.locator("a.licence-tile").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    return [h for h in hrefs if re.fullmatch(r"/wallet/[^/]+", h)]


# ---------------------------------------------------------------- the wallet


def test_wallet_cards_and_a_code_that_renews_itself(stack, browse):
    ctx = browse("phone")
    page = ctx.new_page()
    page.clock.install()  # the page's timers run on a clock this test moves
    login_at_tongban(page, stack.base, CITIZEN, then="/wallet")
    tiles = page.locator("a.licence-tile")
    assert tiles.count() >= 2
    # every licence shows as its card picture, with its state in words
    for i in range(tiles.count()):
        card = tiles.nth(i).locator("img.licence-card")
        card.evaluate("img => img.decode()")  # loaded and decodable (a broken picture rejects)
        assert card.bounding_box()["width"] > 300  # a card across the phone, not a thumbnail
    revoked = page.locator("a.licence-tile[data-status=revoked]").filter(has_text=REVOKED_REASON)
    assert revoked.count() == 1  # the seeded one (other tests may revoke others)
    valid_tile = page.locator("a.licence-tile[data-status=valid]").first
    href = valid_tile.get_attribute("href")

    page.goto(f"{stack.base}{href}")
    assert page.locator("#status[data-status=valid]").count() == 1
    box = page.locator("#wallet-code")
    token = page.locator("#wallet-code-token")
    first = token.text_content().strip()
    first_exp = int(box.get_attribute("data-expires"))
    assert offline.decode_token(first)[1][offline.CLAIM_LICENCE]["id"] == href.rsplit("/", 1)[1]
    page.clock.run_for(2000)
    assert re.search(r"\d+:\d\d", page.locator("#wallet-code-countdown").inner_text())
    assert box.get_attribute("data-state") == "counting"
    src = page.locator("#wallet-code-qr").get_attribute("src")

    # near its end the page fetches a new code by itself, and shows it
    left = first_exp - int(time.time())
    with page.expect_response(lambda r: r.url.endswith(f"{href}/code") and r.status == 200):
        page.clock.run_for((left - 20) * 1000)
    page.wait_for_function("() => document.getElementById('wallet-code').dataset.renewed === '1'")
    second = token.text_content().strip()
    assert second != first and page.locator("#wallet-code-qr").get_attribute("src") != src
    claims = offline.decode_token(second)[1]
    assert claims[4] >= first_exp  # a fresh expiry (whole seconds: at least as late)
    assert claims[offline.CLAIM_LICENCE]["id"] == href.rsplit("/", 1)[1]
    page.clock.run_for(1000)
    assert box.get_attribute("data-state") == "counting"

    # a revoked licence: its card (faded, stamped), its state, date and reason; no code to show
    page.goto(f"{stack.base}/wallet")
    rhref = revoked.first.get_attribute("href")
    page.goto(f"{stack.base}{rhref}")
    assert page.locator("#status[data-status=revoked]").count() == 1
    assert REVOKED_REASON in page.locator("#status").inner_text()
    assert page.locator("#wallet-code").count() == 0 and page.locator(f"a[href='{rhref}/pdf']").count() == 0
    page.locator("img.licence-card").evaluate("img => img.decode()")


# ---------------------------------------------------------------- log out everywhere


def test_log_out_everywhere_from_the_account_page(stack, browse):
    """Two devices, each logged in at both demo portals; one presses "log out everywhere":
    both Tongban sessions end and all four portal sessions are ended by back-channel logout."""
    housing, social = stack.portals
    devices = []
    for size in ("desktop", "phone"):
        page = browse(size).new_page()
        for portal in (housing, social):
            page.goto(f"{portal}/")
            if not whoami(page, portal)["logged_in"]:
                with page.expect_navigation():
                    page.locator("a[href='/login']").click()
                if page.url.startswith(stack.base):
                    page.locator("input[name=login]").fill(CITIZEN["id_number"])
                    page.locator("input[name=password]").fill(DEMO_PASSWORD)
                    with page.expect_navigation():
                        page.locator("input[name=password]").press("Enter")
                page.wait_for_url(f"{portal}/")
            assert whoami(page, portal)["logged_in"]
        devices.append(page)
    laptop, phone = devices
    sids = {whoami(p, portal)["sid"] for p in devices for portal in (housing, social)}
    assert len(sids) == 2  # one Tongban session per device, shared by both portals

    phone.goto(f"{stack.base}/account")
    button = phone.locator("form[action='/account/logout-everywhere'] [type=submit]")
    button.scroll_into_view_if_needed()
    shot(phone, "citizen-account")
    with phone.expect_navigation():
        button.click()
    shot(phone, "citizen-logged-out-everywhere")

    for page in devices:
        assert page.request.get(f"{stack.base}/account", max_redirects=0).status == 302
    deadline = time.monotonic() + 30
    for page in devices:
        for portal in (housing, social):
            while whoami(page, portal)["logged_in"]:
                assert time.monotonic() < deadline, f"{portal} was not told by its back-channel"
                time.sleep(0.2)
    laptop.goto(f"{housing}/")
    assert laptop.locator("a[href='/login']").is_visible()


# ---------------------------------------------------------------- every page, both sizes


def _first_href(page, selector: str, pattern: str) -> str | None:
    for h in page.locator(selector).evaluate_all("els => els.map(e => e.getAttribute('href'))"):
        if h and re.fullmatch(pattern, h):
            return h
    return None


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_page_fits_both_sizes(stack, browse, size):
    base = stack.base
    anon = browse(size).new_page()
    for path, name in (("/", "citizen-home"), ("/login", "citizen-login"), ("/register", "citizen-register"),
                       ("/password/forgot", "citizen-forgot"), ("/terms", "citizen-terms"),
                       ("/developers", "citizen-developers"), ("/ratings", "ratings-public"),
                       ("/seals/verify", "seal-verify"), ("/licences/verifier", "licence-offline-verifier")):
        resp = anon.goto(f"{base}{path}")
        assert resp.status == 200, (path, resp.status)
        shot(anon, name)
    resp = anon.goto(f"{base}/no-such-page")
    assert resp.status == 404
    shot(anon, "error-404")
    expected_error_page(browse, f"{base}/no-such-page", 404)

    # the citizen: account, wallet (valid and revoked), the scan pages of both
    citizen = browse(size).new_page()
    login_at_tongban(citizen, base, CITIZEN, then="/account")
    shot(citizen, "citizen-account")
    citizen.goto(f"{base}/wallet")
    shot(citizen, "wallet-list")
    hrefs = {state: citizen.locator(f"a.licence-tile[data-status={state}]").first.get_attribute("href")
             for state in ("valid", "revoked")}
    for state, href in hrefs.items():
        citizen.goto(f"{base}{href}")
        shot(citizen, f"wallet-licence-{state}")
    citizen.goto(f"{base}/ratings/mine")
    shot(citizen, "ratings-mine")
    citizen.goto(f"{base}/enterprise/")
    shot(citizen, "citizen-enterprise")

    # the scan page, valid and revoked (the codes from the clerk's list of licences)
    clerk = browse(size).new_page()
    login_at_tongban(clerk, base, CITIZEN2, then="/clerk")
    shot(clerk, "clerk-home")
    issue = _first_href(clerk, "a", r"/clerk/issue/[^/]+")
    if issue:
        clerk.goto(f"{base}{issue}")
        shot(clerk, "clerk-issue")
        # sent with nothing filled in (the browser's own checks off): every problem at its field
        form = clerk.locator("form[method=post]").filter(has=clerk.locator("input[name=holder_name]"))
        with clerk.expect_navigation():
            form.evaluate("f => { f.noValidate = true; "
                          "f.requestSubmit(f.querySelector('[type=submit]:last-of-type')); }")
        assert clerk.locator(".field-error").count() >= 1
        shot(clerk, "clerk-issue-errors")
        expected_error_page(browse, clerk.url, 400)
    clerk.goto(f"{base}/clerk/verify")
    shot(clerk, "clerk-verify")
    clerk.goto(f"{base}/clerk")
    lic = _first_href(clerk, "a", r"/clerk/licences/[^/]+")
    if lic:
        clerk.goto(f"{base}{lic}")
        shot(clerk, "clerk-licence")
    for path, name in (("/admin/clients", "admin-clients"), ("/admin/clients/demo-portal", "admin-client"),
                       ("/admin/clients/new", "admin-client-new"), ("/admin/users", "admin-users"),
                       ("/admin/audit", "admin-audit"), ("/admin/outbox", "admin-outbox"),
                       ("/admin/sms", "admin-sms"), ("/admin/ratings", "admin-ratings"),
                       ("/ratings/cases", "admin-rating-cases")):
        resp = clerk.goto(f"{base}{path}")
        assert resp.status == 200, (path, resp.status)
        shot(clerk, name)
    forbidden = clerk.goto(f"{base}/seals/console/no-such-seal")
    if forbidden.status in (403, 404):
        expected_error_page(browse, f"{base}/seals/console/no-such-seal", forbidden.status)

    scans = {state: href.rsplit("/", 1)[1] for state, href in hrefs.items()}
    # revoking asks for confirmation and a reason (the tour stops at the question)
    clerk.goto(f"{base}/clerk/licences/{scans['valid']}")
    revoke = clerk.locator("button[name=action][value=revoke]")
    with clerk.expect_navigation():
        revoke.click()
    assert clerk.locator("input[type=hidden][name=action][value=revoke]").count() == 1
    shot(clerk, "clerk-confirm")
    scanner = browse(size).new_page()
    for state, identifier in scans.items():
        clerk.goto(f"{base}/clerk/licences/{identifier}")
        link = _first_href(clerk, "a", r"(https?://[^/]+)?/v/[^/]+")
        assert link, f"the clerk's page of {identifier} links no scan page"
        scanner.goto(link if link.startswith("http") else f"{base}{link}")
        shot(scanner, f"scan-{state}")

    # the public seal verifier on the revoked licence's PDF (from the clerk's page): a good
    # seal, and the licence's current state next to it
    pdf = clerk.request.get(f"{base}/clerk/licences/{scans['revoked']}/pdf")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF-")
    anon.goto(f"{base}/seals/verify")
    anon.locator("input[type=file][name=file]").set_input_files(
        {"name": "licence.pdf", "mimeType": "application/pdf", "buffer": pdf.body()})
    with anon.expect_navigation():
        anon.locator("form[enctype='multipart/form-data'] [type=submit]").click()
    assert "verdict-bad" in (anon.locator(".licence-check").first.get_attribute("class") or "")
    shot(anon, "seal-verify-revoked")

    # the seal officer's console
    officer = browse(size).new_page()
    login_at_tongban(officer, base, SEAL_OFFICER, then="/seals/console")
    shot(officer, "seal-console-home")
    seal = _first_href(officer, "a", r"/seals/console/[^/]+")
    if seal:
        officer.goto(f"{base}{seal}")
        shot(officer, "seal-console")
    assert urlsplit(officer.url).path.startswith("/seals/console")
