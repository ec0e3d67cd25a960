"""Browser tests: the real server (``make serve``), the two demo portals, headless Chromium.

One stack per test session (per xdist worker; the module asks xdist to keep its tests on
one worker): a scratch instance folder and database (SQLite, or a PostgreSQL database
named after TEST_DATABASE_URL's), migrated and seeded with the demo data, the production
server on a free port of 127.0.0.1 and the demo portals on free ports of ``localhost``
(another host name, so the browser keeps their cookies apart, as ``make run`` does).

The browser is Debian's ``chromium`` driven by Playwright (never ``playwright install``:
no browser is downloaded). Every page of every test is watched: a console error, an
uncaught script error or a request to any host other than the three under test fails it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.live import PROJECT_ROOT, free_port, server_env, start_server, stop

CHROMIUM = Path(os.environ.get("TONGBAN_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}
SIZES = {"desktop": DESKTOP, "phone": PHONE}


def pytest_configure(config):
    # xdist registers it too; without xdist (-p no:xdist) the mark is just a label
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker (--dist loadgroup)")


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"browser tests need Debian's chromium at {CHROMIUM} "
                                   "(`make install` as root installs it; CI does)")
    for item in items:
        if "tests/e2e/" in item.nodeid:
            item.add_marker(skip)


@dataclass
class Stack:
    base: str  # the provider, http://127.0.0.1:<port>
    portals: list[str]  # the demo portals, http://localhost:<port>
    instance: Path
    env: dict

    @property
    def origins(self) -> set[str]:
        return {self.base, *self.portals}


def _database(instance: Path):
    """(URL, drop) for a scratch database: SQLite in the instance folder, or PostgreSQL."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        return f"sqlite:///{instance / 'tongban.db'}", lambda: None
    import psycopg

    parts = urlsplit(base.replace("postgresql+psycopg://", "postgresql://"))
    name = f"{parts.path.lstrip('/')}_e2e_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    admin = urlunsplit(parts._replace(path="/postgres"))

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    drop()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(scheme="postgresql+psycopg", path=f"/{name}")), drop


def _serve_portals(issuer: str, instance: Path, urls: list[str]):
    """The demo portals, in threads of this process (as ``make run``'s devserver serves them)."""
    from werkzeug.serving import make_server

    from demo import PORTALS
    from demo.portal import create_portal
    from demo.seed import portal_secret

    servers = []
    for spec, url in zip(PORTALS, urls, strict=True):
        app = create_portal(spec, issuer=issuer, client_secret=portal_secret(spec, instance), base_url=url)
        server = make_server("127.0.0.1", urlsplit(url).port, app, threaded=True)
        threading.Thread(target=server.serve_forever, name=f"portal-{spec.key}", daemon=True).start()
        servers.append(server)
    return servers


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM}")
    instance = tmp_path_factory.mktemp("e2e-instance")
    database_url, drop = _database(instance)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    portals = [f"http://localhost:{free_port()}" for _ in range(2)]
    env = {"TONGBAN_INSTANCE_DIR": str(instance), "DATABASE_URL": database_url, "TONGBAN_ISSUER": issuer,
           "PORT": str(port), "WEB_CONCURRENCY": "1", "REDIS_URL": "", "TONGBAN_LOGIN_RATE_PER_IP": "1000",
           "TONGBAN_OUTBOX_POLL_SECONDS": "1"}
    servers, proc = [], None
    try:
        seeded = subprocess.run([sys.executable, "-m", "tests.e2e.seed", *portals], cwd=PROJECT_ROOT,
                                env=server_env(env), capture_output=True, text=True, timeout=180)
        assert seeded.returncode == 0, seeded.stderr[-3000:]
        proc, base = start_server(env)
        assert base == issuer
        servers = _serve_portals(issuer, instance, portals)
        yield Stack(base=issuer, portals=portals, instance=instance, env=env)
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        if proc is not None:
            stop(proc)
        drop()


# module scope: Playwright's sync API runs an event loop on this thread while it is open, and
# the other tests this worker runs afterwards (pyHanko) call asyncio.run()
@pytest.fixture(scope="module")
def browser(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """What the pages of one test did wrong: console errors, script errors, foreign requests."""

    origins: set[str]
    problems: list[str] = field(default_factory=list)

    def route(self, route):
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" in self.origins:
            route.continue_()
        else:
            self.problems.append(f"request to a host not under test: {route.request.method} {url}")
            route.abort("blockedbyclient")

    def page(self, page):
        page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console error on {page.url}: {m.text} ({m.location.get('url', '')})"))
        page.on("pageerror", lambda e: self.problems.append(f"script error on {page.url}: {e}"))
        page.on("dialog", lambda d: d.accept())  # a confirm() before a destructive action: yes


@pytest.fixture
def browse(stack, browser):
    """``browse("desktop"|"phone", lang="zh-CN")`` -> a fresh browser context (own cookies) at that size.

    At the end of the test, any console error, script error or request to another host
    than the provider and the two portals fails it.
    """
    watch = Watch(stack.origins)
    contexts = []

    def _open(size: str = "desktop", lang: str = "zh-CN"):
        ctx = browser.new_context(**SIZES[size], locale=lang, accept_downloads=True,
                                  extra_http_headers={"Accept-Language": lang})
        ctx.set_default_timeout(15_000)
        ctx.route("**/*", watch.route)
        ctx.on("page", watch.page)
        contexts.append(ctx)
        return ctx

    _open.watch = watch  # for the test of the watch itself
    yield _open
    for ctx in contexts:
        ctx.close()
    assert not watch.problems, "\n".join(watch.problems)
