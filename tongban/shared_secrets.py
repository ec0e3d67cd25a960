"""Servers of one deployment must share their secrets: a check, and a command to accept a rotation.

Several servers behind one load balancer behave as one provider only when they hold the same
``SECRET_KEY`` (UI sessions, CSRF, DPoP nonces), ``TONGBAN_KEK`` (keys and secrets sealed at
rest), ``TONGBAN_AUDIT_KEY`` (the audit chain's tags and checkpoints), ``TONGBAN_PAIRWISE_SALT``
(pairwise subjects: registered by ``idp``) and ``TONGBAN_ISSUER`` (every token). A server that
differs in one of them fails quietly: sessions that end at the next request, keys another
server cannot unseal, relying parties that see a different subject for the same person.

So each server computes a **fingerprint** of each of those values and compares it with the
deployment's, kept in the shared database (table ``deployment_secrets``, one row per secret).
The first server to look records its own; later ones must match. ``/readyz`` answers 503 and
names the secrets that differ (never a value or a fingerprint), and the server logs one error
line at start-up and whenever the verdict changes. After a deliberate rotation
``flask --app wsgi secrets accept`` records the current configuration's fingerprints as the
deployment's (audited), optionally keeping the previous ones acceptable for a window so that a
rolling restart does not take every not-yet-restarted server out of the balancer.

The fingerprint is ``Argon2id(secret, salt = label || name || random per-deployment salt)``,
16 bytes. It is keyed by the secret itself (so nothing but the secret produces it), salted per
deployment and per secret (no precomputed table, and two equal secrets do not show as equal),
and slow (2 passes over 19 MiB: OWASP's first Argon2id line, as costly per guess as a password
hash). Whoever reads the table can test a guess of a *weak* secret no faster than a guess of a
user's password from the ``users`` table,
and learns nothing at all about the 32-byte random secrets the instance folder generates. A
plain hash, or an HMAC of a fixed label, would let a stolen database be checked against a
dictionary of weak ``SECRET_KEY`` values at billions of guesses per second. Redis is not used
even when configured: it may evict or lose the record, and the first server to look after a
loss would then make its own secrets the deployment's.
"""

from __future__ import annotations

import hmac
import logging
import secrets as random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import DateTime, String, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from .clock import utcnow
from .extensions import db

log = logging.getLogger(__name__)

# Argon2id at OWASP's 19 MiB line, as costly per guess as a password hash (docs/sessions-and-security.md);
# kept per row, so it
# may change later without invalidating what is recorded
SCHEME = "argon2id:m=19456,t=2,p=1,len=16"
LABEL = b"tongban deployment secret fingerprint v1\x00"
SALT_BYTES = 16

# verdicts of one secret
SAME, PREVIOUS, DIFFERS, UNRECORDED = "same", "previous", "differs", "unrecorded"

_EXT = "tongban.shared_secrets"
_CACHE = "tongban.shared_secrets.fingerprints"
_LOGGED = "tongban.shared_secrets.logged"


class DeploymentSecret(db.Model):
    """The deployment's fingerprint of one secret every server must share."""

    __tablename__ = "deployment_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    scheme: Mapped[str] = mapped_column(String(64))
    salt: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    # after `secrets accept --keep-previous`: the fingerprint replaced, accepted until then
    previous_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    accepted_at: Mapped[datetime] = mapped_column(DateTime)
    accepted_by: Mapped[str] = mapped_column(String(200), default="")


# ---------------------------------------------------------------- which secrets


def register(app: Flask, name: str, value: Callable[[Flask], bytes | str]) -> None:
    """Declare a secret every server of the deployment must share (a package's ``init_app``).
    ``value(app)`` is called in an app context and returns the secret's bytes (or text)."""
    app.extensions.setdefault(_EXT, {})[name] = value


def registered(app: Flask) -> dict[str, Callable[[Flask], bytes | str]]:
    return dict(sorted(app.extensions.get(_EXT, {}).items()))


def _secret_key(app: Flask) -> bytes | str:
    return app.config.get("SECRET_KEY") or b""


def _kek(app: Flask) -> bytes:
    return bytes(app.config.get("TONGBAN_KEK") or b"")


def _audit_key(app: Flask) -> bytes:
    from .audit import load_secret

    return load_secret(app)


def _issuer(app: Flask) -> str:
    return str(app.config.get("TONGBAN_ISSUER") or "")


# ---------------------------------------------------------------- fingerprints


def _params(scheme: str) -> dict[str, int]:
    kind, _, rest = scheme.partition(":")
    if kind != "argon2id":
        raise ValueError(f"unknown fingerprint scheme {scheme!r}")
    out = {k: int(v) for k, v in (part.split("=", 1) for part in rest.split(","))}
    if set(out) != {"m", "t", "p", "len"}:
        raise ValueError(f"bad fingerprint scheme {scheme!r}")
    return out


def fingerprint(name: str, secret: bytes | str, salt_hex: str, scheme: str = SCHEME) -> str:
    """Hex Argon2id of ``secret`` under the salt ``LABEL || name || 0 || salt``: one-way, slow,
    and different for the same secret under another name or in another deployment."""
    from argon2.low_level import Type, hash_secret_raw

    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    p = _params(scheme)
    salt = LABEL + name.encode("ascii") + b"\x00" + bytes.fromhex(salt_hex)
    return hash_secret_raw(raw, salt, time_cost=p["t"], memory_cost=p["m"], parallelism=p["p"],
                           hash_len=p["len"], type=Type.ID).hex()


def own_fingerprint(app: Flask, name: str, salt_hex: str, scheme: str = SCHEME) -> str:
    """This server's fingerprint of ``name`` under a recorded salt (computed once per process)."""
    cache = app.extensions.setdefault(_CACHE, {})
    key = (name, salt_hex, scheme)
    found = cache.get(key)
    if found is None:
        found = cache[key] = fingerprint(name, registered(app)[name](app), salt_hex, scheme)
    return found


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class Verdict:
    states: dict[str, str]  # name -> SAME / PREVIOUS / DIFFERS / UNRECORDED
    recorded: dict[str, Any]  # name -> the recorded row (a DeploymentSecret's columns)

    @property
    def differing(self) -> list[str]:
        return [n for n, s in self.states.items() if s in (DIFFERS, UNRECORDED)]

    @property
    def ok(self) -> bool:
        return not self.differing

    def reason(self) -> str:
        if self.ok:
            return ""
        return (f"this server's {', '.join(self.differing)} differ{'s' if len(self.differing) == 1 else ''} "
                "from the deployment's: give it the same value as the other servers, or after a "
                "rotation run `flask --app wsgi secrets accept`")


def _rows(conn=None) -> dict[str, Any]:
    """The recorded rows (plain result rows: a probe every few seconds builds no ORM objects), on
    ``conn`` when given (``/readyz``'s own connection)."""
    if conn is not None:
        return {r.name: r for r in conn.execute(select(DeploymentSecret.__table__))}
    with db.engine.connect() as own:
        return {r.name: r for r in own.execute(select(DeploymentSecret.__table__))}


def _host() -> str:
    return socket.gethostname()[:150]


def _record_missing(app: Flask, names: list[str]) -> None:
    """Record this server's fingerprints of secrets the deployment has none of yet. When another
    server records at the same moment, its insert or ours fails on the primary key: the loser's
    fingerprints are then compared with the winner's like anyone's."""
    now = utcnow()
    values = []
    for name in names:
        salt = random.token_hex(SALT_BYTES)
        values.append({"name": name, "scheme": SCHEME, "salt": salt,
                       "fingerprint": own_fingerprint(app, name, salt), "previous_fingerprint": None,
                       "previous_until": None, "accepted_at": now, "accepted_by": f"{_host()} (first seen)"})
    try:
        with db.engine.begin() as conn:
            conn.execute(insert(DeploymentSecret.__table__), values)
    except IntegrityError:
        log.info("deployment secrets: another server recorded them first")
        return
    log.info("deployment secrets: recorded this server's fingerprints of %s", ", ".join(names))


def compare(app: Flask, rows: dict[str, Any], now: datetime | None = None) -> Verdict:
    now = now or utcnow()
    states = {}
    for name in registered(app):
        row = rows.get(name)
        if row is None:
            states[name] = UNRECORDED
            continue
        own = own_fingerprint(app, name, row.salt, row.scheme)
        if hmac.compare_digest(own, row.fingerprint):
            states[name] = SAME
        elif (row.previous_fingerprint and row.previous_until and now < row.previous_until
              and hmac.compare_digest(own, row.previous_fingerprint)):
            states[name] = PREVIOUS
        else:
            states[name] = DIFFERS
    return Verdict(states, rows)


def check(app: Flask | None = None, *, record: bool = True, conn=None) -> Verdict:
    """Compare this server's secrets with the deployment's, recording those not yet recorded
    (the first server to look sets them). Raises when the database cannot be read."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    rows = _rows(conn) if conn is not None else _rows()
    missing = [n for n in registered(app) if n not in rows]
    if missing and record:
        _record_missing(app, missing)
        rows = _rows()
    return compare(app, rows)


def report(app: Flask, verdict: Verdict, *, always: bool = False) -> None:
    """One log line when the verdict is not what this process last logged (or ``always``)."""
    key = tuple(sorted(verdict.states.items()))
    if not always and app.extensions.get(_LOGGED) == key:
        return
    app.extensions[_LOGGED] = key
    if not verdict.ok:
        log.error("deployment secrets differ: %s (not ready until fixed)", verdict.reason())
    elif PREVIOUS in verdict.states.values():
        until = {n: verdict.recorded[n].previous_until for n, s in verdict.states.items() if s == PREVIOUS}
        log.warning("deployment secrets: this server still runs the previous %s, accepted until %s (UTC)",
                    ", ".join(until), min(v for v in until.values() if v is not None).isoformat(timespec="seconds"))
    elif always:
        log.info("deployment secrets: this server's match the deployment's")


def check_at_startup(app: Flask) -> Verdict | None:
    """For ``wsgi.py`` and the worker: check (and record the first time), log the verdict.
    Never stops the start: a database not reachable yet, or not migrated, is logged."""
    try:
        with app.app_context():
            verdict = check(app)
    except Exception as e:
        log.warning("deployment secrets: not checked at start-up (%s: the database is not reachable or not "
                    "migrated); /readyz checks them", type(e).__name__)
        log.debug("deployment secrets: start-up check failed", exc_info=True)
        return None
    report(app, verdict, always=True)
    return verdict


def accept(app: Flask, *, keep_previous: int = 0, actor: str = "cli") -> dict:
    """Record this configuration's fingerprints as the deployment's (after a rotation); the
    replaced ones stay accepted for ``keep_previous`` seconds. Audited. In the caller's
    transaction (the CLI commits)."""
    from .audit import record

    now = utcnow()
    until = now + timedelta(seconds=keep_previous) if keep_previous > 0 else None
    rows = {r.name: r for r in db.session.execute(select(DeploymentSecret).with_for_update()).scalars()}
    changed, unchanged, added = [], [], []
    for name in registered(app):
        row = rows.get(name)
        if row is None:
            salt = random.token_hex(SALT_BYTES)
            db.session.add(DeploymentSecret(
                name=name, scheme=SCHEME, salt=salt, fingerprint=own_fingerprint(app, name, salt),
                accepted_at=now, accepted_by=f"{_host()} ({actor})"))
            added.append(name)
            continue
        own = own_fingerprint(app, name, row.salt, row.scheme)
        if hmac.compare_digest(own, row.fingerprint):
            unchanged.append(name)
            continue
        db.session.execute(update(DeploymentSecret).where(DeploymentSecret.name == name).values(
            fingerprint=own,
            previous_fingerprint=row.fingerprint if until else None,
            previous_until=until,
            accepted_at=now, accepted_by=f"{_host()} ({actor})"))
        changed.append(name)
    result = {"changed": changed, "added": added, "unchanged": unchanged,
              "previous_until": until.isoformat(timespec="seconds") if until and changed else None}
    if changed or added:
        record("secrets.accepted", actor=actor, object=",".join(changed + added),
               detail={"changed": changed, "added": added, "keep_previous_seconds": keep_previous,
                       "host": _host()})
    app.extensions.pop(_LOGGED, None)
    return result


def readiness_check(app: Flask, conn=None) -> tuple[str, list[str]]:
    """For ``/readyz`` (on its connection): ("ok", []) or ("differ", names) or ("unavailable", [])."""
    try:
        verdict = check(app, conn=conn)
    except Exception:
        log.warning("readiness: the deployment secrets could not be checked", exc_info=True)
        return "unavailable", []
    report(app, verdict)
    return ("ok", []) if verdict.ok else ("differ", verdict.differing)


# ---------------------------------------------------------------- CLI and wiring


def _cli(app: Flask) -> None:
    import json
    import sys

    import click
    from flask.cli import AppGroup

    from .cli import command_errors

    group = AppGroup("secrets", help="The secrets every server of the deployment must share.")

    @group.command("status")
    @click.option("--json", "as_json", is_flag=True)
    def status_cmd(as_json: bool):
        """This configuration's secrets against the deployment's; exit 1 when one differs."""
        a = current_app._get_current_object()  # type: ignore[attr-defined]
        verdict = check(a, record=False)
        out = {}
        for name, state in verdict.states.items():
            row = verdict.recorded.get(name)
            out[name] = {"state": state,
                         "accepted_at": row.accepted_at.isoformat(timespec="seconds") if row else None,
                         "accepted_by": row.accepted_by if row else None,
                         "previous_until": (row.previous_until.isoformat(timespec="seconds")
                                            if row and row.previous_until else None)}
        if as_json:
            click.echo(json.dumps({"ok": verdict.ok, "secrets": out}, ensure_ascii=False))
        else:
            for name, item in out.items():
                extra = f", previous accepted until {item['previous_until']}" if item["previous_until"] else ""
                click.echo(f"{name}: {item['state']} (recorded {item['accepted_at']} by {item['accepted_by']}{extra})")
        if not verdict.ok:
            sys.exit(1)

    @group.command("accept")
    @click.option("--keep-previous", default="0", show_default=True,
                  help="Keep the fingerprints replaced acceptable this long (600, 10m, 2h, 1d): "
                       "servers not yet restarted with the new secrets stay ready meanwhile.")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.option("--json", "as_json", is_flag=True)
    @command_errors
    def accept_cmd(keep_previous: str, yes: bool, as_json: bool):
        """Record this configuration's secrets as the deployment's (after a rotation); audited."""
        from .config import ConfigError, convert

        try:
            seconds = convert("--keep-previous", keep_previous, "seconds", source="option")
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        a = current_app._get_current_object()  # type: ignore[attr-defined]
        # accepting on the wrong server would take every other one out of the balancer: say so first
        differing = check(a, record=False).differing
        if differing and not yes:
            later = " once the window ends" if seconds else ""
            click.confirm(f"Make this configuration's {', '.join(differing)} the deployment's? Servers "
                          f"still holding the old value will answer 503 on /readyz{later}.", abort=True, err=True)
        result = accept(a, keep_previous=seconds)
        if as_json:
            click.echo(json.dumps(result, ensure_ascii=False))
        elif not (result["changed"] or result["added"]):
            click.echo("nothing to accept: this configuration's secrets are the deployment's")
        else:
            text = "accepted: " + ", ".join(result["changed"] + result["added"])
            if result["previous_until"]:
                text += f"; the previous values stay accepted until {result['previous_until']} (UTC)"
            click.echo(text)

    app.cli.add_command(group)


def init_app(app: Flask) -> None:
    register(app, "SECRET_KEY", _secret_key)
    register(app, "TONGBAN_KEK", _kek)
    register(app, "TONGBAN_AUDIT_KEY", _audit_key)
    register(app, "TONGBAN_ISSUER", _issuer)
    _cli(app)
