#!/usr/bin/env python3
"""Soak test: two production servers behind one issuer, a realistic mix for minutes, and
whether their memory stays flat.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 20] [--connections 4]
    .venv/bin/python bench/soak.py --quick          # one minute, the same checks

What it does, on this machine only (127.0.0.1):

- creates a PostgreSQL database for the run (``soak_<pid>_<random>`` on SOAK_ADMIN_URL,
  default ``postgresql://postgres@127.0.0.1:5432/postgres``) and drops it afterwards, and uses
  Redis database 12 (``--redis-db``), emptied before and after;
- migrates, seeds ``--citizens`` accounts (one argon2 hash, then bulk rows), a
  ``client_credentials`` client, a first-party portal (code + refresh) and a licence;
- starts TWO servers (``python -m tongban.serve``, Granian, WEB_CONCURRENCY=1 each) sharing
  the database, Redis, the instance secrets and one issuer, as servers behind a load balancer;
- runs the mix, alternating servers (a log-in's steps go to both): a password log-in end to
  end (GET authorize → log-in page → POST with CSRF → code → token), a ``client_credentials``
  token, userinfo, a refresh-token rotation, ``GET /v/<code>`` JSON;
- samples each server's RSS (Granian's main process and its worker) every 10 s.

Prints requests, errors (a status the step does not expect), p50/p99 per kind, and each
server's RSS after the warm-up (the first minute) and at the end; exits 1 when any request
failed or a server's RSS grew by more than ``--max-growth`` (10 %).

Bounded: ``--rate`` caps the operations per second (a log-in counts as one), ``--minutes``
is at most 60, and the whole run (set-up included) stops at ``--minutes`` + 5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    HOST,
    ROOT,
    free_port,
    group_processes,
    local_paths,
    pct,
    pkce,
    postgres_database,
    run_flask,
    start_tongban,
    status_kib,
    stop,
    wait_ready,
)

CITIZEN_PASSWORD = "Soak-Passw0rd!x"
REDIRECT = "http://127.0.0.1:9/cb"
ORG = ("91350100M000100Y43", "通办示范科技有限公司")
KINDS = ("login", "client_credentials", "userinfo", "refresh", "licence_json")
# operations per round of the mix: a log-in costs one argon2id verification (~175 ms of CPU)
MIX = {"login": 1, "client_credentials": 4, "userinfo": 4, "refresh": 2, "licence_json": 4}


class StepError(Exception):
    """A response the step did not expect (counted as an error)."""


# ---------------------------------------------------------------- set-up


def id_number(i: int) -> str:
    """A valid GB 11643 ID number, distinct for every i < 10**7 (born in 1980-1999)."""
    from tongban.identifiers import id_check_char

    birth = f"{1980 + i % 20}{1 + i // 20 % 12:02d}{1 + i // 240 % 28:02d}"
    first17 = f"110105{birth}{i // 6720 % 1000:03d}"
    return first17 + id_check_char(first17)


def seed_citizens(n: int) -> None:
    """Run in a subprocess with the run's environment: n citizens sharing one password hash."""
    from sqlalchemy import insert

    from people.models import User
    from people.passwords import hash_password
    from tongban import create_app
    from tongban.clock import utcnow
    from tongban.extensions import db

    app = create_app()
    with app.app_context():
        pw = hash_password(CITIZEN_PASSWORD)
        now = utcnow()
        rows = [{"sub": secrets.token_urlsafe(15), "id_number": id_number(i), "name": f"市民{i}",
                 "password_hash": pw, "assurance_level": 1, "failed_logins": 0, "disabled": False,
                 "created_at": now, "password_changed_at": now} for i in range(n)]
        db.session.execute(insert(User), rows)
        db.session.commit()


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


# ---------------------------------------------------------------- the mix


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []

    def ok(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latency[kind].append(seconds)

    def error(self, kind: str, what: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            if len(self.samples) < 10:
                self.samples.append(f"{kind}: {what}")


class Pool:
    """Refresh tokens (each used once: a reused one would revoke its family) and access tokens."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refresh: deque[str] = deque(maxlen=200)
        self.access: deque[str] = deque(maxlen=50)

    def put(self, access: str, refresh: str | None) -> None:
        with self.lock:
            self.access.append(access)
            if refresh:
                self.refresh.append(refresh)

    def take_refresh(self) -> str | None:
        with self.lock:
            return self.refresh.popleft() if self.refresh else None

    def an_access(self) -> str | None:
        with self.lock:
            return random.choice(self.access) if self.access else None


class RateCap:
    """At most ``rate`` operations per second over all threads."""

    def __init__(self, rate: float) -> None:
        self.interval, self.next, self.lock = 1.0 / rate, time.monotonic(), threading.Lock()

    def wait(self, stop_at: float) -> bool:
        with self.lock:
            slot = max(self.next, time.monotonic())
            self.next = slot + self.interval
        delay = slot - time.monotonic()
        if slot >= stop_at:
            return False
        if delay > 0:
            time.sleep(delay)
        return True


def _expect(resp, *statuses: int) -> None:
    if resp.status_code not in statuses:
        raise StepError(f"{resp.request.method} {urlsplit(resp.request.url).path} → {resp.status_code} "
                        f"{resp.text[:120]!r}")


def _path(location: str) -> str:
    u = urlsplit(location)
    return u.path + (f"?{u.query}" if u.query else "")


class Client:
    def __init__(self, ports: list[int], ctx: dict, pool: Pool, stats: Stats) -> None:
        import requests

        self.requests = requests
        self.ports, self.ctx, self.pool, self.stats = ports, ctx, pool, stats
        self.http = requests.Session()  # keep-alive for the system requests
        self.turn = random.randrange(len(ports))

    def base(self) -> str:
        self.turn = (self.turn + 1) % len(self.ports)
        return f"http://{HOST}:{self.ports[self.turn]}"

    def token(self, data: dict, auth: tuple[str, str]):
        resp = self.http.post(self.base() + self.ctx["token_path"], data=data, auth=auth, timeout=30)
        _expect(resp, 200)
        return resp.json()

    def login(self) -> None:
        """A browser's password log-in, its steps spread over both servers."""
        browser = self.requests.Session()
        citizen = id_number(random.randrange(self.ctx["citizens"]))
        verifier, challenge = pkce()
        portal = self.ctx["portal"]
        resp = browser.get(self.base() + self.ctx["authorize_path"], params={
            "response_type": "code", "client_id": portal["client_id"], "redirect_uri": REDIRECT,
            "scope": "openid profile", "state": "soak", "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge, "code_challenge_method": "S256"}, allow_redirects=False, timeout=30)
        _expect(resp, 302, 303)
        resp = browser.get(self.base() + _path(resp.headers["Location"]), allow_redirects=False, timeout=30)
        _expect(resp, 200)
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', resp.text)
        nxt = re.search(r'name="next"[^>]*value="([^"]*)"', resp.text)
        if not csrf or not nxt:
            raise StepError("the log-in page has no csrf_token or next field")
        import html

        resp = browser.post(self.base() + "/login", data={
            "csrf_token": csrf.group(1), "next": html.unescape(nxt.group(1)), "login": citizen,
            "password": CITIZEN_PASSWORD}, allow_redirects=False, timeout=60)
        _expect(resp, 302, 303)
        resp = browser.get(self.base() + _path(resp.headers["Location"]), allow_redirects=False, timeout=30)
        _expect(resp, 302, 303)
        found = re.search(r"[?&]code=([^&]+)", resp.headers.get("Location", ""))
        if not found:
            raise StepError(f"no code in the redirect {resp.headers.get('Location', '')[:120]!r}")
        tok = self.token({"grant_type": "authorization_code", "code": found.group(1), "redirect_uri": REDIRECT,
                          "code_verifier": verifier}, (portal["client_id"], portal["client_secret"]))
        self.pool.put(tok["access_token"], tok.get("refresh_token"))
        browser.close()

    def client_credentials(self) -> None:
        cc = self.ctx["cc"]
        self.token({"grant_type": "client_credentials"}, (cc["client_id"], cc["client_secret"]))

    def userinfo(self) -> None:
        access = self.pool.an_access()
        if access is None:
            self.login()
            return
        resp = self.http.get(self.base() + self.ctx["userinfo_path"],
                             headers={"Authorization": f"Bearer {access}"}, timeout=30)
        _expect(resp, 200)

    def refresh(self) -> None:
        raw = self.pool.take_refresh()
        if raw is None:
            self.login()
            return
        portal = self.ctx["portal"]
        tok = self.token({"grant_type": "refresh_token", "refresh_token": raw},
                         (portal["client_id"], portal["client_secret"]))
        self.pool.put(tok["access_token"], tok.get("refresh_token"))

    def licence_json(self) -> None:
        resp = self.http.get(self.base() + self.ctx["licence_path"], headers={"Accept": "application/json"},
                             timeout=30)
        _expect(resp, 200)
        if "status" not in resp.json():
            raise StepError("/v/<code> JSON without a status")

    def run(self, kind: str) -> None:
        t0 = time.perf_counter()
        try:
            getattr(self, kind)()
        except StepError as e:
            self.stats.error(kind, str(e))
            return
        except (self.requests.RequestException, ValueError, KeyError) as e:
            self.stats.error(kind, f"{type(e).__name__}: {e}"[:200])
            return
        self.stats.ok(kind, time.perf_counter() - t0)


def load(ports: list[int], ctx: dict, seconds: float, rate: float, connections: int, stats: Stats) -> None:
    pool, cap = Pool(), RateCap(rate)
    deck = [k for k, n in MIX.items() for _ in range(n)]
    stop_at = time.monotonic() + seconds

    def worker(i: int) -> None:
        client = Client(ports, ctx, pool, stats)
        order = deck[:]
        random.Random(i).shuffle(order)
        n = 0
        while cap.wait(stop_at):
            client.run(order[n % len(order)])
            n += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------- memory


def server_rss(pgid: int) -> int:
    """KiB resident in a server's processes (Granian's main process and worker; not make/sh)."""
    return sum(status_kib(pid, "VmRSS") for pid, _, _ in group_processes(pgid))


class Sampler(threading.Thread):
    def __init__(self, servers: list[subprocess.Popen], every: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.servers, self.every = servers, every
        self.samples: list[tuple[float, list[int]]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self.t0, [server_rss(s.pid) for s in self.servers]))
            if self.halt.wait(self.every):
                self.samples.append((time.monotonic() - self.t0, [server_rss(s.pid) for s in self.servers]))
                return

    def floor(self, start: float, end: float) -> list[int]:
        """Per server, the lowest sample taken in [start, end]: the resident memory the process
        keeps, without the 64 MiB an argon2id verification in flight holds for a moment (freed
        back to the system afterwards), which a single sample may or may not catch."""
        window = [rss for t, rss in self.samples if start <= t <= end] or [self.samples[-1][1]]
        return [min(col) for col in zip(*window, strict=True)]


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10, help="length of the mix (default 10, at most 60)")
    ap.add_argument("--quick", action="store_true", help="one minute (same checks, 20 s warm-up)")
    ap.add_argument("--rate", type=float, default=20, help="operations per second, at most (default 20)")
    ap.add_argument("--connections", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--citizens", type=int, default=1000, help="accounts seeded (default 1000)")
    ap.add_argument("--warmup", type=float, default=60, help="seconds before the reference RSS (default 60)")
    ap.add_argument("--max-growth", type=float, default=10.0, help="RSS growth allowed, %% (default 10)")
    ap.add_argument("--redis-db", type=int, default=12)
    ap.add_argument("--seed-citizens", type=int, help=argparse.SUPPRESS)  # internal: the seeding subprocess
    args = ap.parse_args()
    if args.seed_citizens is not None:
        seed_citizens(args.seed_citizens)
        return 0
    if args.quick:
        args.minutes, args.warmup = 1, 20
    if not (0 < args.minutes <= 60) or not (0 < args.rate <= 500) or not (1 <= args.connections <= 32) \
            or not (1 <= args.citizens <= 1_000_000) or not (0 <= args.redis_db <= 15):
        ap.error("out of bounds: --minutes 0–60, --rate 0–500, --connections 1–32, --citizens 1–10^6")
    seconds = args.minutes * 60
    warmup = min(args.warmup, seconds / 3)
    # the total time cap: whatever hangs, the run ends (and cleans up) at minutes + 5
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("soak: total time cap reached")))
    signal.alarm(int(seconds + 300))

    admin = os.environ.get("SOAK_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    for url in (admin, redis_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit(f"refusing a non-loopback address: {url}")
    tmp = Path(tempfile.mkdtemp(prefix="tongban-soak-"))
    cleanup = contextlib.ExitStack()
    database = cleanup.enter_context(postgres_database(admin, "soak_"))
    dbname = urlsplit(database).path.lstrip("/")
    flush_redis(redis_url)
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TONGBAN_", "FLASK_")) and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update({
        "TONGBAN_INSTANCE_DIR": str(tmp / "instance"), "DATABASE_URL": database, "REDIS_URL": redis_url,
        # one public address for both, as behind a load balancer
        "TONGBAN_ISSUER": f"http://{HOST}:{ports[0]}",
        "TONGBAN_LOGIN_RATE_PER_IP": "1000000",  # every log-in comes from 127.0.0.1
        "HOST": HOST, "WEB_CONCURRENCY": "1", "SERVER": "granian",
    })
    servers: list[subprocess.Popen] = []
    code = 1
    try:
        print(f"instance {tmp}  database {dbname}  redis db {args.redis_db}", flush=True)
        run_flask(env, "db", "upgrade")
        subprocess.run([sys.executable, __file__, "--seed-citizens", str(args.citizens)], cwd=ROOT, env=env,
                       check=True, timeout=600)
        cc = json.loads(run_flask(env, "clients", "create", "--name", "soak system", "--department", "soak",
                                  "--grant-type", "client_credentials", "--scope", "openid", "--json"))
        portal = json.loads(run_flask(
            env, "clients", "create", "--name", "soak portal", "--department", "soak", "--redirect-uri", REDIRECT,
            "--grant-type", "authorization_code", "--grant-type", "refresh_token", "--scope", "openid profile",
            "--first-party", "--json"))
        lic = json.loads(run_flask(env, "licences", "issue", "--type", "营业执照", "--holder-id", ORG[0],
                                   "--holder-name", ORG[1], "--json"))
        for i, port in enumerate(ports):
            senv = {**env, "PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"metrics-{i}")}
            # the JSON access log, kept off the screen
            servers.append(start_tongban(senv, log=tmp / f"server-{i + 1}.log"))
        meta = {}
        for port, server in zip(ports, servers, strict=True):
            meta = wait_ready(port, server)
        paths = local_paths(meta, ("token_endpoint", "authorization_endpoint", "userinfo_endpoint"))
        ctx = {"citizens": args.citizens, "cc": cc, "portal": portal,
               "token_path": paths["token_endpoint"], "authorize_path": paths["authorization_endpoint"],
               "userinfo_path": paths["userinfo_endpoint"], "licence_path": urlsplit(lic["verify_url"]).path}
        print(f"2 servers (granian, 1 worker each) on {ports}; {args.minutes:g} min, at most {args.rate:g} "
              f"operations/s, {args.connections} threads; mix {MIX}", flush=True)
        stats = Stats()
        sampler = Sampler(servers)
        sampler.start()
        t0 = time.monotonic()
        load(ports, ctx, seconds, args.rate, args.connections, stats)
        elapsed = time.monotonic() - t0
        sampler.halt.set()
        sampler.join()
        code = report(args, stats, sampler, warmup, elapsed, servers)
        if code:
            for i, _ in enumerate(servers):
                tail = (tmp / f"server-{i + 1}.log").read_text(errors="replace").splitlines()
                errs = [line for line in tail if '"level": "ERROR"' in line or "Traceback" in line][-5:]
                for line in errs:
                    print(f"  server {i + 1} log: {line[:300]}")
    finally:
        signal.alarm(0)
        for server in servers:
            stop(server)
        with contextlib.suppress(Exception):
            flush_redis(redis_url)
        cleanup.close()  # drops the database
        shutil.rmtree(tmp, ignore_errors=True)
    return code


def report(args, stats: Stats, sampler: Sampler, warmup: float, elapsed: float, servers) -> int:
    total = sum(len(v) for v in stats.latency.values())
    errors = sum(stats.errors.values())
    print(f"\n{total} operations in {elapsed:.0f} s ({total / elapsed:.1f}/s), {errors} errors")
    print(f"{'kind':20} {'count':>8} {'errors':>7} {'p50 ms':>9} {'p99 ms':>9}")
    for kind in KINDS:
        lat = sorted(stats.latency.get(kind, []))
        print(f"{kind:20} {len(lat):8d} {stats.errors.get(kind, 0):7d} {pct(lat, 0.5):9.1f} {pct(lat, 0.99):9.1f}")
    for line in stats.samples:
        print(f"  error: {line}")
    span = sampler.samples[-1][0]
    window = max(10.0, min(60.0, (span - warmup) / 2))
    print(f"\nRSS (sampled every 10 s): the lowest sample of the {window:.0f} s after the {warmup:.0f} s warm-up, "
          f"and of the last {window:.0f} s")
    worst = 0.0
    ref_all, end_all = sampler.floor(warmup, warmup + window), sampler.floor(span - window, span)
    for i, _ in enumerate(servers):
        ref, end = ref_all[i], end_all[i]
        growth = (end - ref) / ref * 100 if ref else float("inf")
        worst = max(worst, growth)
        peak = max(s[1][i] for s in sampler.samples)
        print(f"  server {i + 1}: {ref / 1024:7.1f} MiB after warm-up, {end / 1024:7.1f} MiB at the end "
              f"({growth:+.1f} %), peak {peak / 1024:.1f} MiB")
    for i, server in enumerate(servers):
        for pid, _, cmd in group_processes(server.pid):
            print(f"    server {i + 1} process {pid}: {status_kib(pid, 'VmRSS') / 1024:7.1f} MiB  {cmd[:60]}")
    trace = "  ".join(f"{t:.0f}s:{'/'.join(f'{r / 1024:.0f}' for r in rss)}" for t, rss in sampler.samples)
    print(f"  samples (MiB, server 1/server 2): {trace}")
    failed = errors > 0 or worst > args.max_growth
    print("FAIL" if failed else "OK", f"(errors {errors}, worst RSS growth {worst:+.1f} %, "
          f"allowed {args.max_growth:g} %)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
