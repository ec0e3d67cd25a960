"""End to end in headless Chromium, against the real server and the demo portals.

Selectors are form field names, URLs and the verdicts' JSON or CSS classes, not
wording: the pages' text changes, what they do should not.
"""

from __future__ import annotations

import re
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from demo.data import CITIZEN, CITIZEN2, DEMO_PASSWORD
from licence.catalogue import TYPES
from tests.e2e.shots import keep

pytestmark = pytest.mark.xdist_group("e2e")  # one stack (server, portals, browser) per run

SOCIAL_SECURITY_CARD = next(t["code"] for t in TYPES if t["name"] == "社会保障卡")


def login(page, who: dict) -> None:
    """Tongban's log-in form, wherever the page currently is (the form posts back to where it came from)."""
    page.locator("input[name=login]").fill(who["id_number"])
    page.locator("input[name=password]").fill(DEMO_PASSWORD)
    with page.expect_navigation():
        page.locator("input[name=password]").press("Enter")


def login_at_tongban(page, base: str, who: dict, then: str = "/") -> None:
    page.goto(f"{base}/login?next={then}")
    login(page, who)
    assert urlsplit(page.url).path == then, page.url


def look(page, name: str) -> None:
    """The page fits its screen (no sideways scrolling, phone or desktop); with
    TONGBAN_E2E_SCREENSHOTS=DIR a full-page screenshot is kept as DIR/<name>-<wide|phone>.png."""
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"{page.url} is {width[0]} px wide on a {width[1]} px screen"
    keep(page, name)


def whoami(page, portal: str) -> dict:
    return page.request.get(f"{portal}/whoami").json()


def verdict_json(ctx, url: str) -> dict:
    resp = ctx.request.get(url, headers={"Accept": "application/json"})
    assert resp.status == 200, resp.status
    return resp.json()


# ---------------------------------------------------------------- the watch on every page


def test_the_watch_catches_console_errors_script_errors_and_foreign_requests(stack, browse):
    """What fails every other test here: shown to work, then cleared (this test must not fail by it)."""
    page = browse("phone").new_page()
    page.goto(f"{stack.base}/seals/verify")
    assert not browse.watch.problems, browse.watch.problems
    page.evaluate("() => { console.error('e2e-canary'); setTimeout(() => { throw new Error('e2e-uncaught'); }, 0); }")

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(browse.watch.problems) < n and time.monotonic() < deadline:
            page.wait_for_timeout(100)

    wait_for(2)  # the timer's error must be seen before the page is left
    with pytest.raises(Exception, match="ERR_BLOCKED_BY_CLIENT"):
        page.goto("https://cdn.example.com/lib.js")
    wait_for(3)
    caught = "\n".join(browse.watch.problems)
    browse.watch.problems.clear()
    assert "console error" in caught and "e2e-canary" in caught, caught
    assert "script error" in caught and "e2e-uncaught" in caught, caught
    assert "host not under test" in caught and "cdn.example.com" in caught, caught


# ---------------------------------------------------------------- single sign-on, logout everywhere


def test_sso_across_portals_and_logout_everywhere(stack, browse):
    housing, social = stack.portals
    page = browse("desktop").new_page()
    page.goto(f"{housing}/")  # a silent try at Tongban (prompt=none) finds no session: back, not logged in
    assert page.url.rstrip("/") == housing and not whoami(page, housing)["logged_in"]
    with page.expect_navigation():
        page.locator("a[href='/login']").click()
    assert page.url.startswith(stack.base), page.url  # Tongban asks for the password, not the portal
    look(page, "citizen-login")
    login(page, CITIZEN)
    page.wait_for_url(f"{housing}/")
    look(page, "portal-logged-in")
    me = whoami(page, housing)
    assert me["logged_in"] and me["sid"]
    assert page.locator("form[action='/logout']").is_visible()

    # the other portal: logged in at once, no password asked, the same Tongban session
    page.goto(f"{social}/")
    page.wait_for_url(f"{social}/")
    assert page.locator("form[action='/logout']").is_visible()
    assert page.locator("input[name=password]").count() == 0
    assert whoami(page, social)["sid"] == me["sid"]

    # log out at one: back at that portal, logged out of it and of Tongban ...
    page.locator("form[action='/logout'] [type=submit]").click()
    page.wait_for_url(f"{social}/")
    assert not whoami(page, social)["logged_in"]
    assert page.locator("a[href='/login']").is_visible()
    assert page.request.get(f"{stack.base}/account", max_redirects=0).status == 302
    # ... and the other portal was told by its back-channel: logged out too
    deadline = time.monotonic() + 20
    while whoami(page, housing)["logged_in"]:
        assert time.monotonic() < deadline, "the back-channel logout did not reach the other portal"
        time.sleep(0.2)
    page.goto(f"{housing}/")
    assert page.locator("a[href='/login']").is_visible()


# ---------------------------------------------------------------- a licence from counter to QR scan


def qr_links(pdf: bytes, tmp_path) -> list[str]:
    """The QR codes of the PDF's first page, rendered at 150 dpi as a phone camera would see a print."""
    import zxingcpp
    from PIL import Image

    (tmp_path / "licence.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "150", "-png", "-f", "1", "-l", "1", str(tmp_path / "licence.pdf"),
                    str(tmp_path / "page")], check=True, timeout=60)
    (png,) = tmp_path.glob("page*.png")
    return [r.text for r in zxingcpp.read_barcodes(Image.open(png)) if r.format == zxingcpp.BarcodeFormat.QRCode]


def shows(page, status: str) -> None:
    """The verdict page shows ``status`` by markup, not wording: its ``data-status`` if it has
    one, else its verdict box is green (``.scan-ok`` / ``.alert-success``) only when valid and
    red (``.scan-bad``) otherwise. The JSON of the same URL is the authoritative check."""
    valid = status == "valid"
    marked = page.locator("[data-status]")
    if marked.count():
        assert marked.first.get_attribute("data-status") == status
        return
    scan = page.locator(".scan-verdict")
    if scan.count():
        assert page.locator(".scan-verdict.scan-ok").count() == (1 if valid else 0)
        assert page.locator(".scan-verdict.scan-bad").count() == (0 if valid else 1)
        return
    verdict = page.locator(".licence-verdict")
    assert verdict.count() == 1, "no verdict on the page"
    assert (verdict.locator(".alert-success").count() > 0) == valid


def test_clerk_issues_citizen_downloads_scans_and_revocation_turns_it_red(stack, browse, tmp_path):
    # the window clerk (desktop) issues a social security card to the demo citizen
    clerk = browse("desktop").new_page()
    login_at_tongban(clerk, stack.base, CITIZEN2, then="/clerk")
    look(clerk, "clerk-home")
    clerk.goto(f"{stack.base}/clerk/issue/{SOCIAL_SECURITY_CARD}")
    look(clerk, "clerk-issue")
    form = clerk.locator("form[method=post]").filter(has=clerk.locator("input[name=holder_name]"))
    form.locator("input[name=holder_id]").fill(CITIZEN["id_number"])
    form.locator("input[name=holder_name]").fill(CITIZEN["name"])
    form.locator("select[name=f_gender]").select_option("男" if int(CITIZEN["id_number"][16]) % 2 else "女")
    form.locator("input[name=f_birth_date]").fill("1949-12-31")
    form.locator("input[name=f_card_no]").fill("B87654321")
    with clerk.expect_navigation():
        form.locator("[type=submit]").last.click()
    m = re.search(r"/clerk/licences/([^/?#]+)$", clerk.url)
    assert m, f"not on the issued licence's page: {clerk.url}"
    identifier = m.group(1)
    look(clerk, "clerk-licence")

    # the clerk downloads the sealed PDF, where the console offers it
    clerk_pdf = None
    offered = clerk.locator(f"a[download][href*='/clerk/licences/{identifier}/pdf']")
    if offered.count():
        with clerk.expect_download() as download:
            offered.first.click()
        clerk_pdf = download.value.path().read_bytes()

    # the citizen (phone) finds it in the wallet and downloads the sealed PDF
    ctx = browse("phone")
    phone = ctx.new_page()
    login_at_tongban(phone, stack.base, CITIZEN, then="/wallet")
    look(phone, "wallet-list")
    phone.locator(f"a[href='/wallet/{identifier}']").first.click()
    phone.wait_for_url(f"**/wallet/{identifier}")
    look(phone, "wallet-licence-valid")
    with phone.expect_download() as download:
        phone.locator(f"a[href='/wallet/{identifier}/pdf']").click()
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert clerk_pdf in (None, pdf)  # the same sealed document at the counter and in the wallet

    # the QR printed on it, read from a 150 dpi render, opens /v/ on this server: valid, green
    links = [u for u in qr_links(pdf, tmp_path) if "/v/" in u]
    assert len(links) == 1, links
    (link,) = links
    assert link.startswith(f"{stack.base}/v/"), link
    resp = phone.goto(link)
    assert resp.status == 200
    shows(phone, "valid")
    look(phone, "scan-valid")
    view = verdict_json(ctx, link)
    assert view["valid"] is True and view["status"] == "valid" and view["licence"]["id"] == identifier
    # a forged QR (the code changed by one character) is no licence at all
    code = link.rsplit("/", 1)[1]
    forged = f"{stack.base}/v/{code[:-1]}{'A' if code[-1] != 'A' else 'B'}"
    resp = ctx.request.get(forged, headers={"Accept": "application/json"})
    assert resp.status == 404 and resp.json()["valid"] is False and resp.json()["status"] == "unknown"

    # the clerk revokes it (giving a reason, confirming if the console asks): the same QR now
    # says revoked, and the page is no longer green
    clerk.goto(f"{stack.base}/clerk/licences/{identifier}")
    revoke = clerk.locator("button[name=action][value=revoke]")
    reason = clerk.locator("form").filter(has=revoke).locator("[name=reason]")
    if reason.count():
        reason.fill("证件信息有误")
    with clerk.expect_navigation():
        revoke.click()
    confirm = clerk.locator("form").filter(has=clerk.locator("input[type=hidden][name=action][value=revoke]"))
    if confirm.count():  # a confirmation step
        reason = confirm.locator("[name=reason]")
        if reason.count():
            reason.fill("证件信息有误")
        with clerk.expect_navigation():
            confirm.locator("[type=submit]").first.click()
    view = verdict_json(ctx, link)
    assert view["valid"] is False and view["status"] == "revoked"
    phone.reload()
    shows(phone, "revoked")
    look(phone, "scan-revoked")


# ---------------------------------------------------------------- the public seal verifier


def tampered(pdf: bytes) -> bytes:
    """One character of the sealed revision changed (inside the signed byte range, still parseable)."""
    m = re.search(rb"/Producer \((\w)", pdf) or re.search(rb"/CreationDate \(D:(\d)", pdf)
    assert m, "no plain string to alter in the sealed revision"
    i = m.start(1)
    return pdf[:i] + (b"X" if pdf[i:i + 1] != b"X" else b"Y") + pdf[i + 1:]


def seal_verdict(page, base: str, name: str, pdf: bytes) -> bool:
    page.goto(f"{base}/seals/verify")
    page.locator("input[type=file][name=file]").set_input_files(
        {"name": name, "mimeType": "application/pdf", "buffer": pdf})
    with page.expect_navigation():
        page.locator("form[enctype='multipart/form-data'] [type=submit]").click()
    marked = page.locator("[data-verdict]")
    if marked.count():
        return marked.first.get_attribute("data-verdict") == "valid"
    # the seals' verdict: the live region that is not the "is this a licence" box
    heading = page.locator("[aria-live]:not(.licence-check):not(#licence) h2").first
    ok, warn = heading.locator(".badge-ok").count(), heading.locator(".badge-warn").count()
    assert ok + warn == 1, page.content()[:2000]
    return bool(ok)


def test_seal_verifier_on_sealed_and_tampered_pdf(stack, browse):
    ctx = browse("phone")
    page = ctx.new_page()
    login_at_tongban(page, stack.base, CITIZEN, then="/wallet")
    tile = page.locator("a[href^='/wallet/']").filter(has_not=page.locator("[href$='/pdf']"))
    hrefs = [h for h in tile.evaluate_all("els => els.map(e => e.getAttribute('href'))")
             if re.fullmatch(r"/wallet/[^/]+", h)]
    # a licence still valid (another test may have revoked one; its PDF is then withheld)
    downloads = (ctx.request.get(f"{stack.base}{h}/pdf") for h in hrefs)
    sealed = next((r for r in downloads if r.status == 200), None)
    assert sealed is not None, f"no valid licence PDF in the demo citizen's wallet ({hrefs})"
    pdf = sealed.body()
    bad = tampered(pdf)
    assert bad != pdf and len(bad) == len(pdf)
    for size in ("phone", "desktop"):
        verifier = browse(size).new_page()  # anyone, logged in or not
        assert seal_verdict(verifier, stack.base, "licence.pdf", pdf) is True
        licence_box = verifier.locator(".licence-check")  # where the verifier also says "this is a licence"
        if licence_box.count():
            assert "verdict-ok" in (licence_box.first.get_attribute("class") or "")
        look(verifier, "seal-verify-sealed")
        assert seal_verdict(verifier, stack.base, "licence-altered.pdf", bad) is False
        look(verifier, "seal-verify-altered")
