"""Seal benchmark: seals/s (EC vs RSA, with and without time-stamp + revocation data),
verifications/s, and the bytes a seal adds to a one-page PDF. Prints figures; asserts nothing.

    .venv/bin/python bench/seal.py [-n 30]

Runs against a throw-away instance (SQLite in a temporary folder).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_page_pdf() -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595, 842))
    c.drawString(72, 770, "Tongban benchmark notice / 通知")
    c.showPage()
    c.save()
    return buf.getvalue()


def timed(fn, n: int) -> tuple[float, object, float, float]:
    """Median wall time, the result, the best wall time and the median CPU time of ``fn()``.

    On a shared machine the best and the CPU time say more than the median wall time.
    """
    fn()  # warm-up: key decryption, font and CA caches
    times, cpu, out = [], [], None
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), out, min(times), statistics.median(cpu)


def load() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load average unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()

    from flask_migrate import upgrade

    from tongban import create_app
    from tongban.bootstrap import bootstrap
    from tongban.extensions import db

    tmp = tempfile.mkdtemp(prefix="tongban-bench-")
    app = create_app({"TONGBAN_INSTANCE_DIR": tmp, "TONGBAN_KEK": bytes(32)})
    with app.app_context():
        import logging

        logging.getLogger("alembic").setLevel(logging.WARNING)
        upgrade(directory=app.extensions["migrate"].directory, revision="heads")
        bootstrap()
        from seal import services

        uscc = app.config["TONGBAN_AUTHORITY_USCC"]
        ec_seal = services.create_seal(uscc, "EC 章", "official", alg="ec")
        rsa_seal = services.create_seal(uscc, "RSA 章", "official", alg="rsa")
        db.session.commit()
        pdf = one_page_pdf()
        print(f"one-page PDF: {len(pdf)} bytes; n={args.n} (median wall, best wall, median CPU); {load()}")
        sealed = {}
        for label, seal in (("EC P-256", ec_seal), ("RSA-2048", rsa_seal)):
            for full in (True, False):
                def go(seal=seal, full=full):
                    out = services.sign_pdf(seal, pdf, purpose="bench", actor="bench", timestamp=full,
                                            embed_revocation=full)
                    db.session.rollback()  # keep the audit log small; sealing itself is measured
                    return out
                t, out, best, cpu = timed(go, args.n)
                sealed[(label, full)] = out
                what = "B-LT (timestamp + CRLs)" if full else "B-B (no timestamp, no revocation data)"
                print(f"seal   {label:<9} {what:<40} {t * 1000:7.1f} ms"
                      f" (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
                      f"  {1 / t:6.1f} seals/s  +{len(out) - len(pdf):6d} bytes")
        for label in ("EC P-256", "RSA-2048"):
            doc = sealed[(label, True)]
            t, verdict, best, cpu = timed(lambda doc=doc: services.verify_pdf(doc), args.n)
            assert verdict["valid"], verdict
            print(f"verify {label:<9} {'B-LT document':<40} {t * 1000:7.1f} ms"
                  f" (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
                  f"  {1 / t:6.1f} verifications/s")
        print(load())


if __name__ == "__main__":
    main()
