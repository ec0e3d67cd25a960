"""Seal benchmark: seals/s (EC vs RSA, with and without time-stamp + revocation data),
verifications/s, and the bytes a seal adds to a one-page PDF. Prints figures; asserts nothing.

    .venv/bin/python bench/seal.py [-n 30]

Runs against a throw-away instance (SQLite in a temporary folder).
"""

from __future__ import annotations

import argparse

from _common import loadavg, one_page_pdf, throwaway_app, timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()

    from tongban.extensions import db

    with throwaway_app() as app:
        from seal import services

        uscc = app.config["TONGBAN_AUTHORITY_USCC"]
        ec_seal = services.create_seal(uscc, "EC 章", "official", alg="ec")
        rsa_seal = services.create_seal(uscc, "RSA 章", "official", alg="rsa")
        db.session.commit()
        pdf = one_page_pdf()
        print(f"one-page PDF: {len(pdf)} bytes; n={args.n} (median wall, best wall, median CPU); "
              f"load average {loadavg()}")
        sealed = {}
        for label, seal in (("EC P-256", ec_seal), ("RSA-2048", rsa_seal)):
            for full in (True, False):
                def go(seal=seal, full=full):
                    out = services.sign_pdf(seal, pdf, purpose="bench", actor="bench", timestamp=full,
                                            embed_revocation=full)
                    db.session.rollback()  # keep the audit log small; sealing itself is measured
                    return out
                t, best, cpu, out = timed(go, args.n)
                sealed[(label, full)] = out
                what = "B-LT (timestamp + CRLs)" if full else "B-B (no timestamp, no revocation data)"
                print(f"seal   {label:<9} {what:<40} {t * 1000:7.1f} ms"
                      f" (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
                      f"  {1 / t:6.1f} seals/s  +{len(out) - len(pdf):6d} bytes")
        for label in ("EC P-256", "RSA-2048"):
            doc = sealed[(label, True)]
            t, best, cpu, verdict = timed(lambda doc=doc: services.verify_pdf(doc), args.n)
            assert verdict["valid"], verdict
            print(f"verify {label:<9} {'B-LT document':<40} {t * 1000:7.1f} ms"
                  f" (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
                  f"  {1 / t:6.1f} verifications/s")
        print(f"load average {loadavg()}")


if __name__ == "__main__":
    main()
