#!/usr/bin/env python3
"""Password log-ins per second of one production worker, end to end.

    .venv/bin/python bench/login.py [--seconds 15] [--browsers 6] [--citizens 500]
                                    [--cost T,M,P] [--postgres] [--redis URL] [--server granian|gunicorn]
    .venv/bin/python bench/login.py --argon2-only      # the cost table: Argon2id alone, CPU ms per check
    .venv/bin/python bench/login.py --profile 200      # cProfile of 200 log-ins in-process, Argon2 apart
    .venv/bin/python bench/login.py --steps 200 [--profile-step login_post]
                                       # per step: CPU ms, SQL statements, commits; a step's cProfile

Creates a throwaway instance (SQLite in a temporary folder, or with --postgres a database
``login_bench_<pid>`` on 127.0.0.1:5432, created and dropped; or BENCH_DATABASE_URL), migrates
it, bulk-inserts N citizens sharing ONE precomputed Argon2id hash at the cost under test (no
N hashings), registers a confidential first-party client (no consent page), starts
``python -m tongban.serve`` with WEB_CONCURRENCY=1 pinned to CPU 0 and drives it from CPU 1
(helpers from bench/tokens.py) with several concurrent browsers. Every log-in is a fresh
browser (its own cookie jar and connection), so it is a real password log-in, never SSO:

    GET  /oauth/authorize?...PKCE...      the log-in page, its CSRF token (a server that
                                          redirects to /login?next=... is followed)
    POST /login (CSRF, ID number, pwd)    302 to the redirect URI with ?code=, SSO cookie
                                          (the authorization request continues in the log-in's
                                          response; a server that sends the browser back to it
                                          is followed: GET /oauth/authorize?... 302 with ?code=)
    POST /oauth/token (code, verifier)    200 with the tokens

Prints log-ins/s, p50/p99 of the whole log-in and of the POST /login, and the server's CPU
ms per log-in (utime+stime of its processes from /proc) split into Argon2 (measured alone,
same cost, same CPU) and the rest. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import html
import http.client
import io
import json
import os
import pstats
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

# Run as a script, this folder is sys.path[0].
from _common import (
    HOST,
    basic_auth,
    callgrind,
    callgrind_dump,
    free_port,
    group_cpu_seconds,
    group_rss,
    in_threads,
    local_paths,
    pct,
    pin_self,
    pinning,
    pkce,
    postgres_database,
    print_group_rss,
    run_flask,
    start_tongban,
    stop,
    tongban_env,
    wait_ready,
)

PASSWORD = "Bench-Passw0rd!"
REDIRECT = "http://127.0.0.1:9/cb"
RFC9106_SECOND = (3, 65536, 4)
COSTS = [  # (label, t, m KiB, p)
    ("RFC 9106 §4 2nd (argon2-cffi default)", 3, 65536, 4),
    ("RFC 9106 §4 2nd with p=1", 3, 65536, 1),
    ("OWASP m=46 MiB t=1 p=1", 1, 47104, 1),
    ("OWASP m=19 MiB t=2 p=1 (the default before)", 2, 19456, 1),
    ("OWASP m=12 MiB t=3 p=1", 3, 12288, 1),
    ("OWASP m=9 MiB t=4 p=1 (Tongban default)", 4, 9216, 1),
    ("OWASP m=7 MiB t=5 p=1 (the floor)", 5, 7168, 1),
]
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
_NEXT = re.compile(r'id="next" name="next" type="hidden" value="([^"]*)"')


def parse_cost(raw: str) -> tuple[int, int, int]:
    if raw.strip().lower() == "rfc":
        return RFC9106_SECOND
    try:
        t, m, p = (int(x) for x in raw.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected T,M,P (time cost, memory KiB, parallelism)") from None
    return t, m, p


# ---------------------------------------------------------------- Argon2 alone


def argon2_cpu_ms(t: int, m: int, p: int, n: int = 20) -> tuple[float, float]:
    """(CPU ms, wall ms) per verification at this cost, in this process (pin it first)."""
    from argon2 import PasswordHasher

    h = PasswordHasher(time_cost=t, memory_cost=m, parallelism=p)
    stored = h.hash(PASSWORD)
    check = h.verify
    try:  # the server's own path (a reused buffer), where the tree has it
        from people import argon2_memory

        size = argon2_memory.needed_bytes(m, p)

        def check(stored: str, password: str) -> bool:  # type: ignore[misc]
            return bool(argon2_memory.verify_password(stored, password, pool_size=size))
    except ImportError:
        pass
    check(stored, PASSWORD)  # warm
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        check(stored, PASSWORD)
    return (time.process_time() - c0) * 1000 / n, (time.perf_counter() - w0) * 1000 / n


def argon2_table() -> None:
    pin_self(0)
    print("Argon2id alone (argon2-cffi), one verification, one thread pinned to CPU 0, 20 runs each\n")
    print(f"{'setting':42} {'t':>2} {'m KiB':>6} {'p':>2} {'CPU ms':>7} {'wall ms':>8} {'max/s/core':>10}")
    for label, t, m, p in COSTS:
        cpu, wall = argon2_cpu_ms(t, m, p)
        print(f"{label:42} {t:2d} {m:6d} {p:2d} {cpu:7.1f} {wall:8.1f} {1000 / cpu:10.1f}", flush=True)


# ---------------------------------------------------------------- the instance


def id_numbers(n: int) -> list[str]:
    """n distinct valid ID numbers (GB 11643: region, birth date, sequence, check character)."""
    from tongban.identifiers import id_check_char

    out = []
    day = date(1960, 1, 1)
    while len(out) < n:
        for seq in range(1, 1000):
            body = f"110105{day:%Y%m%d}{seq:03d}"
            out.append(body + id_check_char(body))
            if len(out) == n:
                break
        day += timedelta(days=1)
    return out


def seed_citizens(app, n: int, cost: tuple[int, int, int]) -> list[str]:
    """Bulk-insert n citizens sharing one Argon2id hash made at ``cost``."""
    from argon2 import PasswordHasher
    from sqlalchemy import insert

    from people.models import User
    from tongban.clock import token, utcnow
    from tongban.extensions import db

    t, m, p = cost
    stored = PasswordHasher(time_cost=t, memory_cost=m, parallelism=p, hash_len=32, salt_len=16).hash(PASSWORD)
    numbers = id_numbers(n)
    now = utcnow()
    rows = [dict(sub=token(15), id_number=number, name="张三", phone=None, password_hash=stored,
                 assurance_level=1, created_at=now, password_changed_at=now, failed_logins=0, disabled=False)
            for number in numbers]
    with app.app_context(), db.engine.begin() as conn:
        for i in range(0, n, 1000):
            conn.execute(insert(User), rows[i:i + 1000])
    return numbers


def make_app(instance: Path, url: str, cost: tuple[int, int, int]):
    from tongban import create_app

    t, m, p = cost
    return create_app({"TONGBAN_INSTANCE_DIR": str(instance), "SQLALCHEMY_DATABASE_URI": url,
                       "TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False,
                       "TONGBAN_LOGIN_RATE_PER_IP": 10**9,
                       "TONGBAN_ARGON2_TIME_COST": t, "TONGBAN_ARGON2_MEMORY_KIB": m,
                       "TONGBAN_ARGON2_PARALLELISM": p})


# ---------------------------------------------------------------- one browser, one log-in


class Browser:
    """A fresh browser: one keep-alive connection and its own cookie jar."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)
        self.cookies: dict[str, str] = {}

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
             ) -> tuple[int, dict, bytes]:
        h = {"Connection": "keep-alive", **(headers or {})}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        for raw in resp.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for key, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, data

    def close(self) -> None:
        self.conn.close()


def one_login(port: int, client_id: str, basic: str, login: str) -> tuple[float, float]:
    """A complete password log-in and code exchange; (seconds in all, seconds of the POST)."""
    t0 = time.perf_counter()
    b = Browser(port)
    try:
        verifier, challenge = pkce()
        query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                           "scope": "openid profile", "state": secrets.token_urlsafe(8),
                           "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        status, headers, page = b.send("GET", f"/oauth/authorize?{query}")
        if status == 302 and "/login" in headers.get("location", ""):  # the page behind a redirect
            status, _, page = b.send("GET", _path(headers["location"]))
        m = _CSRF.search(page.decode())
        if status != 200 or not m:
            raise RuntimeError(f"log-in page: {status}")
        nxt = html.unescape(_NEXT.search(page.decode()).group(1))
        form = urlencode({"csrf_token": m.group(1), "login": login, "password": PASSWORD, "next": nxt}).encode()
        p0 = time.perf_counter()
        status, headers, _ = b.send("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
        post = time.perf_counter() - p0
        if status != 302:
            raise RuntimeError(f"POST /login: {status}")
        location = headers.get("location", "")
        if not location.startswith(REDIRECT):  # sent back to the authorization request
            status, headers, _ = b.send("GET", _path(location))
            location = headers.get("location", "")
        if status != 302 or not location.startswith(REDIRECT):
            raise RuntimeError(f"authorize after log-in: {status} {location[:120]}")
        code = parse_qs(urlsplit(location).query)["code"][0]
        body = urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                          "code_verifier": verifier}).encode()
        status, _, data = b.send("POST", "/oauth/token", body, {
            "Content-Type": "application/x-www-form-urlencoded", "Authorization": basic})
        if status != 200 or b"id_token" not in data:
            raise RuntimeError(f"token: {status} {data[:200]!r}")
    finally:
        b.close()
    return time.perf_counter() - t0, post


def _path(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def drive(port: int, client_id: str, basic: str, citizens: list[str], seconds: float, browsers: int) -> dict:
    totals: list[list[float]] = [[] for _ in range(browsers)]
    posts: list[list[float]] = [[] for _ in range(browsers)]
    errors: list[str] = []
    counter = iter(range(10**9))
    lock = threading.Lock()

    def worker(i: int, deadline: float) -> None:
        while time.perf_counter() < deadline:
            with lock:
                n = next(counter)
            try:
                total, post = one_login(port, client_id, basic, citizens[n % len(citizens)])
            except (OSError, http.client.HTTPException, RuntimeError, KeyError) as e:
                errors.append(repr(e)[:200])
                continue
            totals[i].append(total)
            posts[i].append(post)

    elapsed = in_threads(browsers, worker, seconds)
    every = sorted(x for per in totals for x in per)
    post_all = sorted(x for per in posts for x in per)
    return {"logins": len(every), "elapsed": elapsed, "per_s": len(every) / elapsed,
            "p50": pct(every, 0.5), "p99": pct(every, 0.99), "post_p50": pct(post_all, 0.5),
            "post_p99": pct(post_all, 0.99), "errors": errors}


# ---------------------------------------------------------------- profile in-process


def _app_cost(app) -> tuple[int, int, int]:
    return (app.config["TONGBAN_ARGON2_TIME_COST"], app.config["TONGBAN_ARGON2_MEMORY_KIB"],
            app.config["TONGBAN_ARGON2_PARALLELISM"])


def profile(app, client_id: str, secret: str, citizens: list[str], n: int) -> None:
    """cProfile of n complete log-ins through the Werkzeug test client, in this process."""
    from werkzeug.test import Client

    basic = basic_auth(client_id, secret)

    def login_once(login: str) -> None:
        c = Client(app, use_cookies=True)
        verifier, challenge = pkce()
        query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                           "scope": "openid profile", "state": "s", "nonce": secrets.token_urlsafe(8),
                           "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        page = c.get(f"/oauth/authorize?{query}")
        if page.status_code == 302:  # the page behind a redirect
            page = c.get(_path(page.headers["location"]))
        m = _CSRF.search(page.get_data(as_text=True))
        if m is None:
            raise RuntimeError(f"log-in page: {page.status_code} {page.get_data(as_text=True)[:300]}")
        token = m.group(1)
        nxt = html.unescape(_NEXT.search(page.get_data(as_text=True)).group(1))
        r = c.post("/login", data={"csrf_token": token, "login": login, "password": PASSWORD, "next": nxt})
        assert r.status_code == 302, r.status_code
        if not r.headers["location"].startswith(REDIRECT):
            r = c.get(_path(r.headers["location"]))
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        r = c.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": REDIRECT, "code_verifier": verifier},
                   headers={"Authorization": basic})
        assert r.status_code == 200, r.get_data(as_text=True)

    for i in range(5):  # warm: templates compiled, keys loaded, caches filled
        login_once(citizens[i])
    c0 = time.process_time()
    for i in range(n):
        login_once(citizens[(i + 5) % len(citizens)])
    plain = (time.process_time() - c0) * 1000 / n
    argon2_ms, _ = argon2_cpu_ms(*_app_cost(app))
    print(f"{n} log-ins in-process, not profiled: {plain:.1f} CPU ms each = Argon2 {argon2_ms:.1f} ms "
          f"(alone) + the rest {plain - argon2_ms:.1f} ms")
    prof = cProfile.Profile(time.process_time)  # CPU time: the machine may be shared
    c0, w0 = time.process_time(), time.perf_counter()
    prof.enable()
    for i in range(n):
        login_once(citizens[(i + 5 + n) % len(citizens)])
    prof.disable()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if os.environ.get("BENCH_PROFILE_OUT"):
        prof.dump_stats(os.environ["BENCH_PROFILE_OUT"])  # for pstats / snakeviz
    stats = pstats.Stats(prof)
    argon2 = sum(v[3] for k, v in stats.stats.items()  # type: ignore[attr-defined]
                 if k[2] in ("verify", "hash") and "argon2" in k[0])
    print(f"{n} log-ins in-process, profiled: {cpu * 1000 / n:.1f} CPU ms each, "
          f"Argon2 {argon2 * 1000 / n:.1f} ms, the rest {(cpu - argon2) * 1000 / n:.1f} ms; wall {wall:.1f} s")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(order).print_stats(35)
        print(f"\n--- by {order} ---")
        print("\n".join(out.getvalue().splitlines()[6:]))


# ---------------------------------------------------------------- per step, in-process




STEPS = ("authorize1", "login_get", "login_post", "authorize2", "token")


def steps(app, client_id: str, secret: str, citizens: list[str], n: int, profile_step: str = "",
          rounds: int = 1) -> None:
    """Per step of n log-ins in-process: CPU ms (unprofiled; Argon2 taken out of login_post),
    SQL statements and commits (SQLAlchemy engine events), and a cProfile of one step."""
    from sqlalchemy import event
    from werkzeug.test import Client

    from tongban.extensions import db

    basic = basic_auth(client_id, secret)
    counts = {"stmts": 0, "commits": 0}

    def on_stmt(*_a, **_k) -> None:
        counts["stmts"] += 1

    def on_commit(*_a, **_k) -> None:
        counts["commits"] += 1

    from argon2 import PasswordHasher

    argon2_cpu = [0.0]
    plain_verify = PasswordHasher.verify
    grind = os.environ.get("TONGBAN_BENCH_UNDER_CALLGRIND")

    depth = [0]  # the pooled path may hand an odd hash to argon2-cffi: count the outer call only

    def timed(call):  # Argon2's own CPU, measured where it runs (and not counted by callgrind)
        def run(*a, **k):
            depth[0] += 1
            if grind and depth[0] == 1:
                callgrind("-i", "off")
            c0 = time.process_time()
            try:
                return call(*a, **k)
            finally:
                if depth[0] == 1:
                    argon2_cpu[0] += time.process_time() - c0
                    if grind:
                        callgrind("-i", "on")
                depth[0] -= 1
        return run

    timed_verify = timed(plain_verify)
    try:  # the server's own path (Argon2 in reused buffers), where the tree has it
        from people import argon2_memory
    except ImportError:
        argon2_memory = None  # type: ignore[assignment]
    pooled_verify = getattr(argon2_memory, "verify_password", None)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", on_stmt)
    event.listen(engine, "commit", on_commit)
    cpu = {s: 0.0 for s in STEPS}
    stmts = {s: 0 for s in STEPS}
    commits = {s: 0 for s in STEPS}
    prof = cProfile.Profile(time.process_time)

    instructions = {s: 0 for s in STEPS}
    seen: set[str] = set()

    def step(name: str, record: bool, call):
        seen.add(name)
        s0, k0 = counts["stmts"], counts["commits"]
        profiled = record and name == profile_step
        if record and grind:
            callgrind("-i", "on")
        c0 = time.process_time()
        if profiled:
            prof.enable()
        try:
            return call()
        finally:
            if profiled:
                prof.disable()
            if record:
                cpu[name] += time.process_time() - c0
                stmts[name] += counts["stmts"] - s0
                commits[name] += counts["commits"] - k0
                if grind:
                    callgrind("-i", "off")
                    instructions[name] += callgrind_dump(Path(grind) / "callgrind", f"{name}-{secrets.token_hex(4)}")

    def login_once(login: str, record: bool) -> None:
        c = Client(app, use_cookies=True)
        verifier, challenge = pkce()
        query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                           "scope": "openid profile", "state": "s", "nonce": secrets.token_urlsafe(8),
                           "code_challenge": challenge, "code_challenge_method": "S256"})
        page = step("authorize1", record, lambda: c.get(f"/oauth/authorize?{query}"))
        if page.status_code == 302:  # an older server: the page behind a redirect
            login_url = _path(page.headers["location"])
            page = step("login_get", record, lambda: c.get(login_url))
        m = _CSRF.search(page.get_data(as_text=True))
        if m is None:
            raise RuntimeError(f"log-in page: {page.status_code}")
        nxt = html.unescape(_NEXT.search(page.get_data(as_text=True)).group(1))
        form = {"csrf_token": m.group(1), "login": login, "password": PASSWORD, "next": nxt}
        r = step("login_post", record, lambda: c.post("/login", data=form))
        assert r.status_code == 302, r.status_code
        if not r.headers["location"].startswith(REDIRECT):  # an older server: one more round trip
            r = step("authorize2", record, lambda: c.get(_path(r.headers["location"])))
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "code_verifier": verifier}
        r = step("token", record, lambda: c.post("/oauth/token", data=body, headers={"Authorization": basic}))
        assert r.status_code == 200, r.get_data(as_text=True)

    try:
        for i in range(5):  # warm
            login_once(citizens[i], False)
        PasswordHasher.verify = timed_verify  # type: ignore[method-assign]
        if pooled_verify is not None:
            argon2_memory.verify_password = timed(pooled_verify)
        best: dict[str, float] = {}
        for r in range(rounds):  # the machine may be shared: each step's least CPU over the rounds
            for k in STEPS:
                cpu[k], stmts[k], commits[k] = 0.0, 0, 0
            argon2_cpu[0] = 0.0
            for i in range(n):
                login_once(citizens[(r * n + i + 5) % len(citizens)], True)
            for k in STEPS:
                spent = cpu[k] - (argon2_cpu[0] if k == "login_post" else 0.0)
                best[k] = min(best.get(k, spent), spent)
    finally:
        PasswordHasher.verify = plain_verify  # type: ignore[method-assign]
        if pooled_verify is not None:
            argon2_memory.verify_password = pooled_verify
        event.remove(engine, "before_cursor_execute", on_stmt)
        event.remove(engine, "commit", on_commit)
    argon2_ms = argon2_cpu[0] * 1000 / n
    alone_ms, _ = argon2_cpu_ms(*_app_cost(app))
    print(f"{n} log-ins in-process x {rounds} rounds, per step (CPU ms unprofiled, the least of the rounds, "
          f"incl. the test client; Argon2 {argon2_ms:.1f} ms as measured around its calls, taken out of "
          f"login_post; {alone_ms:.1f} ms alone)")
    print(f"{'step':12} {'CPU ms':>7} {'stmts':>6} {'commits':>8}")
    total = 0.0
    taken = [s for s in STEPS if s in seen]  # a server that answers sooner skips steps
    for s in taken:
        ms = best[s] * 1000 / n
        total += ms
        print(f"{s:12} {ms:7.2f} {stmts[s] / n:6.1f} {commits[s] / n:8.1f}")
    print(f"{'all':12} {total:7.2f} {sum(stmts.values()) / n:6.1f} {sum(commits.values()) / n:8.1f}")
    if grind:
        print(f"\ninstructions per log-in, counted by callgrind over {n * rounds} log-ins (Argon2 "
              "left out; the same on a quiet and on a loaded machine)")
        for s in taken:
            print(f"{s:12} {instructions[s] / (n * rounds) / 1e6:8.2f} M")
        print(f"{'all':12} {sum(instructions.values()) / (n * rounds) / 1e6:8.2f} M")
    if profile_step:
        if os.environ.get("BENCH_PROFILE_OUT"):
            prof.dump_stats(os.environ["BENCH_PROFILE_OUT"])
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).strip_dirs().sort_stats(order).print_stats(40)
            print(f"\n--- {profile_step}, by {order} ---")
            print("\n".join(out.getvalue().splitlines()[6:]))


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15, help="drive time (default 15, at most 60)")
    ap.add_argument("--browsers", type=int, default=6, help="concurrent browsers (default 6)")
    ap.add_argument("--citizens", type=int, default=500, help="citizens seeded (default 500)")
    ap.add_argument("--cost", type=parse_cost, default=None,
                    help="Argon2id T,M,P of the seeded hash and the server (default: the app's default); "
                         "rfc for RFC 9106's second setting 3,65536,4")
    ap.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database on 127.0.0.1:5432")
    ap.add_argument("--redis", default="", help="REDIS_URL for the server (e.g. redis://127.0.0.1:6379/13)")
    ap.add_argument("--server", choices=("granian", "gunicorn"), default="granian")
    ap.add_argument("--argon2-only", action="store_true", help="print the Argon2id cost table and stop")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile N log-ins in-process and stop")
    ap.add_argument("--steps", type=int, default=0, metavar="N",
                    help="N log-ins in-process: CPU ms, SQL statements and commits per step, and stop")
    ap.add_argument("--profile-step", choices=STEPS, default="",
                    help="with --steps: a cProfile of this step")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --steps: repeat N times and print each step's least CPU (a shared machine)")
    ap.add_argument("--smaps", default="", metavar="DIR",
                    help="save the server processes' smaps to DIR after the warm-up and after the drive")
    ap.add_argument("--callgrind", action="store_true",
                    help="with --steps: also count each step's instructions under valgrind's callgrind "
                         "(Argon2 left out; stable on a loaded machine, ~50 times slower: keep --steps small)")
    args = ap.parse_args()
    if args.argon2_only:
        argon2_table()
        return
    if args.callgrind and not os.environ.get("TONGBAN_BENCH_UNDER_CALLGRIND"):
        if not args.steps or not shutil.which("valgrind"):
            sys.exit("--callgrind needs --steps N and valgrind")
        folder = Path(tempfile.mkdtemp(prefix="tongban-login-grind-"))
        (folder / "callgrind").mkdir()
        os.environ["TONGBAN_BENCH_UNDER_CALLGRIND"] = str(folder)
        # the usage counts are written every few seconds: many log-ins apart under callgrind
        os.environ.setdefault("TONGBAN_USAGE_FLUSH_SECONDS", "3600")
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
                f"--callgrind-out-file={folder / 'callgrind' / 'cg.out.%p'}", sys.executable, *sys.argv]
        os.execvp(argv[0], argv)
    if not 0 < args.seconds <= 60 or not 1 <= args.browsers <= 64 or not 10 <= args.citizens <= 100_000:
        sys.exit("--seconds 0-60, --browsers 1-64, --citizens 10-100000")
    from tongban.config import ARGON2_DEFAULTS, ARGON2_KEYS, check_argon2

    cost = args.cost or tuple(ARGON2_DEFAULTS[k] for k in ARGON2_KEYS)
    check_argon2(dict(zip(ARGON2_KEYS, cost, strict=True)))

    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="tongban-login-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        if os.environ.get("BENCH_DATABASE_URL"):
            url = os.environ["BENCH_DATABASE_URL"]
        elif args.postgres:
            url = stack.enter_context(postgres_database("postgresql://postgres@127.0.0.1:5432/postgres",
                                                        "login_bench_"))
        else:
            url = f"sqlite:///{tmp / 'tongban.db'}"
        run(args, tmp, url, cost)  # type: ignore[arg-type]


def run(args, tmp: Path, url: str, cost: tuple[int, int, int]) -> None:
    port = free_port()
    env = {k: v for k, v in tongban_env(tmp / "instance", url, port, args.server, redis=True).items()
           if not k.startswith("TONGBAN_ARGON2_")}
    t, m, p = cost
    env.update({
        "TONGBAN_LOGIN_RATE_PER_IP": "1000000000",
        "TONGBAN_ARGON2_TIME_COST": str(t), "TONGBAN_ARGON2_MEMORY_KIB": str(m),
        "TONGBAN_ARGON2_PARALLELISM": str(p), "REDIS_URL": args.redis,
    })
    print(f"instance {tmp}  database {url.split('@')[-1]}  Argon2id t={t} m={m} KiB p={p}")
    run_flask(env, "db", "upgrade")
    client = json.loads(run_flask(
        env, "clients", "create", "--name", "bench portal", "--department", "bench",
        "--redirect-uri", REDIRECT, "--grant-type", "authorization_code", "--scope", "openid profile",
        "--first-party", "--json"))
    app = make_app(tmp / "instance", url.replace("postgresql://", "postgresql+psycopg://"), cost)
    t0 = time.perf_counter()
    citizens = seed_citizens(app, args.citizens, cost)
    print(f"seeded {len(citizens)} citizens in {time.perf_counter() - t0:.2f} s (one shared hash)")
    if args.steps:
        pin_self(0)
        steps(app, client["client_id"], client["client_secret"], citizens, args.steps, args.profile_step,
              args.rounds)
        return
    if args.profile:
        pin_self(0)
        profile(app, client["client_id"], client["client_secret"], citizens, args.profile)
        return
    basic = basic_auth(client["client_id"], client["client_secret"])

    server_prefix, _ = pinning()  # the server on CPU 0, this process (the browsers) on CPU 1
    taskset = bool(server_prefix)
    server = start_tongban(env, server_prefix)
    try:
        meta = wait_ready(port, server)
        local_paths(meta, ("authorization_endpoint", "token_endpoint"))
        for i in range(3):  # warm the worker (templates, keys, caches)
            one_login(port, client["client_id"], basic, citizens[-1 - i])
        if args.smaps:
            save_smaps(server.pid, Path(args.smaps), "warm")
        cpu0 = group_cpu_seconds(server.pid)
        r = drive(port, client["client_id"], basic, citizens, args.seconds, args.browsers)
        cpu = group_cpu_seconds(server.pid) - cpu0
        if taskset:
            pin_self(0)  # Argon2 alone on the server's CPU, the server idle
        argon2_ms, _ = argon2_cpu_ms(t, m, p)
        per = cpu * 1000 / r["logins"] if r["logins"] else float("nan")
        print(f"\n{args.server}, 1 worker{' on CPU 0, browsers on CPU 1' if taskset else ''}, "
              f"{args.browsers} browsers, {r['elapsed']:.1f} s, {r['logins']} log-ins, "
              f"{len(r['errors'])} errors")
        print(f"  log-ins/s            {r['per_s']:8.1f}")
        print(f"  whole log-in  p50/p99 {r['p50']:7.1f} / {r['p99']:.1f} ms")
        print(f"  POST /login   p50/p99 {r['post_p50']:7.1f} / {r['post_p99']:.1f} ms")
        print(f"  server CPU per log-in {per:7.1f} ms = Argon2 {argon2_ms:.1f} ms (measured alone) "
              f"+ the rest {per - argon2_ms:.1f} ms")
        print(f"  CPU-bound ceiling     {1000 / per:7.1f} log-ins/s per core" if r["logins"] else "")
        if r["errors"]:
            print("  first errors:", *r["errors"][:5], sep="\n    ")
        print_group_rss(server.pid)
        if args.smaps:
            save_smaps(server.pid, Path(args.smaps), "after")
    finally:
        stop(server)
        from tongban.extensions import db

        with app.app_context():
            db.engine.dispose()  # before the throwaway PostgreSQL database is dropped


def save_smaps(pgid: int, folder: Path, label: str) -> None:
    """``<pid>.<label>.smaps`` in ``folder`` for every process of the server's group: what a
    worker's RSS is made of (heap, malloc arenas, anonymous mappings, libraries), to diff."""
    folder.mkdir(parents=True, exist_ok=True)
    for pid, _cmd, _rss in group_rss(pgid):
        with contextlib.suppress(OSError):
            (folder / f"{pid}.{label}.smaps").write_text(Path(f"/proc/{pid}/smaps").read_text())


if __name__ == "__main__":
    main()
