"""``make worker`` (``python -m tongban.worker``): the background work as its own process.

One pass: deliver every due outbox item (back-channel logout tokens, text messages, ...),
run the periodic chores (expiry sweeps, purges, 好差评 escalation), and seal committed audit
events into the chain. Then wait ``TONGBAN_OUTBOX_POLL_SECONDS`` (or less: the audit chain
is kept within ``TONGBAN_AUDIT_CHAIN_SECONDS``). Any number of workers may run against one
database: outbox items are claimed with a conditional UPDATE (one claimant wins; a claim
not settled in time lapses and is retried), the chainer serialises on the chain's head row.

With dedicated workers, turn the web processes' threads off:
``TONGBAN_OUTBOX_THREAD=0 TONGBAN_AUDIT_CHAIN_THREAD=0 make serve``.

SIGTERM or SIGINT: the current pass finishes, then the process exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

from flask import Flask

log = logging.getLogger("tongban.worker")  # (also when run as __main__)


def run_pass(app: Flask, force_chores: bool = False) -> dict[str, int]:
    """Deliver what is due, run the chores that are due, chain the audit log; returns counts."""
    from . import audit, outbox
    from .extensions import db

    total: dict[str, int] = {}
    with app.app_context():
        try:
            while True:
                done = outbox.work_once()
                for k, v in done.items():
                    total[k] = total.get(k, 0) + v
                if not done:
                    break
            outbox.run_chores(force=force_chores)
            try:
                total["audit_chained"] = audit.chain(app=app)
            except audit.ChainError as e:
                log.error("audit chainer stopped: %s (run `flask audit verify`)", e)
        finally:
            db.session.remove()
    return total


def run(app: Flask, stop: threading.Event, once: bool = False) -> dict[str, int]:
    poll = min(float(app.config["TONGBAN_OUTBOX_POLL_SECONDS"]),
               max(0.2, float(app.config["TONGBAN_AUDIT_CHAIN_SECONDS"])))
    while True:
        try:
            counts = run_pass(app, force_chores=once)
        except Exception:  # the database may be briefly away: the next pass tries again
            log.exception("worker pass failed")
            counts = {}
        if once or stop.is_set():
            return counts
        if any(v for k, v in counts.items() if k != "audit_chained"):
            log.info("worker pass: %s", json.dumps(counts))
        stop.wait(poll)
        if stop.is_set():
            return counts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    once = "--once" in argv
    from .config import ConfigError

    try:
        from . import create_app

        # this process does the work itself: no extra daemon threads inside it
        app = create_app({"TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False})
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 1
    from .shared_secrets import check_at_startup

    check_at_startup(app)  # logs an error line when this worker's secrets differ from the deployment's
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("tongban worker started")
    counts = run(app, stop, once=once)
    if once:
        print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
