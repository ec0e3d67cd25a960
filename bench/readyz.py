"""What checking the shared secrets costs (tongban/shared_secrets.py): CPU per ``GET /readyz``
(the database's ``SELECT 1`` and the secrets' rows read on the same connection), the same with
the database check alone, and the one-off CPU of a process's first check (five Argon2id
fingerprints, the password-hash cost each). Prints figures; asserts nothing.

    .venv/bin/python bench/readyz.py [-n 3000]

In-process (Flask's test client), on a throw-away SQLite instance; CPU is this process's
``time.process_time()``, steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import time

# Run as a script, this folder is sys.path[0]; _common puts the project before it.
from _common import loadavg, throwaway_app, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3000, help="requests per figure (default 3000)")
    args = ap.parse_args()
    from tongban import shared_secrets

    with throwaway_app({"TONGBAN_OUTBOX_THREAD": False, "TONGBAN_AUDIT_CHAIN_THREAD": False,
                        "TONGBAN_ACCESS_LOG": False}) as app:
        c0 = time.process_time()
        verdict = shared_secrets.check(app)  # records: five fingerprints computed
        first = time.process_time() - c0
        print(f"first check (records the fingerprints): {first * 1000:.0f} ms CPU; ok={verdict.ok}; "
              f"load average {loadavg()}")
        client = app.test_client()

        def probe():
            r = client.get("/readyz")
            assert r.status_code == 200, r.get_data(as_text=True)

        with_secrets = timed(lambda: [probe() for _ in range(args.n)], 3)
        # the same probe without the secrets' read: what /readyz cost before the check existed
        original = shared_secrets.readiness_check
        shared_secrets.readiness_check = lambda app, conn=None: ("ok", [])
        try:
            without = timed(lambda: [probe() for _ in range(args.n)], 3)
        finally:
            shared_secrets.readiness_check = original
        per = 1e6 / args.n
        print(f"GET /readyz, CPU per request (median of 3 runs of {args.n}):")
        print(f"  database and secrets   {with_secrets.cpu * per:6.0f} µs")
        print(f"  database alone         {without.cpu * per:6.0f} µs")
        print(f"  the secrets' share     {(with_secrets.cpu - without.cpu) * per:6.0f} µs")
        print(f"load average {loadavg()}")


if __name__ == "__main__":
    main()
