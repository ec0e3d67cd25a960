"""国密 benchmark: SM2 sign/verify per second (GmSSL in C through gmssl-pyx, against the pure-Python
``gmssl`` when it is installed, and EC P-256 through cryptography for scale), then OFD sealing and
verification beside PAdES (EC P-256) on the same one-page document. Prints figures; asserts nothing.

    .venv/bin/python bench/sm2.py [-n 30]
    .venv/bin/pip install gmssl==3.2.2   # optional: the pure-Python comparison

Runs against a throw-away instance (SQLite in a temporary folder).
"""

from __future__ import annotations

import argparse

from _common import one_page_pdf, rate, throwaway_app, timed


def primitives(message: bytes) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from keys import sm2

    key = sm2.generate()
    sig = key.sign(message)
    pub = key.public_key()
    print(f"SM2 (GmSSL 3 in C, gmssl-pyx)      sign {rate(lambda: key.sign(message)):8.0f}/s"
          f"   verify {rate(lambda: pub.verify(message, sig)):8.0f}/s")
    try:
        from gmssl import func
        from gmssl import sm2 as pure
    except ImportError:
        print("SM2 (pure Python, gmssl)           not installed (pip install gmssl==3.2.2 to compare)")
    else:
        c = pure.CryptSM2(private_key=key.d.hex(), public_key=key.point.hex())
        psig = c.sign_with_sm3(message, func.random_hex(c.para_len))
        print(f"SM2 (pure Python, gmssl 3.2.2)     sign {rate(lambda: c.sign_with_sm3(message, func.random_hex(c.para_len))):8.0f}/s"  # noqa: E501
              f"   verify {rate(lambda: c.verify_with_sm3(psig, message)):8.0f}/s")
    eck = ec.generate_private_key(ec.SECP256R1())
    esig = eck.sign(message, ec.ECDSA(hashes.SHA256()))
    print(f"EC P-256 (OpenSSL, cryptography)   sign {rate(lambda: eck.sign(message, ec.ECDSA(hashes.SHA256()))):8.0f}/s"
          f"   verify {rate(lambda: eck.public_key().verify(esig, message, ec.ECDSA(hashes.SHA256()))):8.0f}/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()

    from tongban.extensions import db

    with throwaway_app() as app:
        from seal import ofd as ofd_service
        from seal import services
        from seal.ofdwriter import OfdBuilder

        primitives(b"x" * 1024)
        uscc = app.config["TONGBAN_AUTHORITY_USCC"]
        ec_seal = services.create_seal(uscc, "EC 章", "official", alg="ec")
        sm2_seal = services.create_seal(uscc, "SM2 章", "official", alg="sm2")
        db.session.commit()
        pdf = one_page_pdf()
        doc = OfdBuilder(title="bench").add_page().text(25, 30, "Tongban benchmark notice / 通知").build()
        print(f"one-page PDF {len(pdf)} bytes, one-page OFD {len(doc)} bytes; n={args.n} "
              "(median wall, best wall, median CPU)")

        def seal_pdf():
            out = services.sign_pdf(ec_seal, pdf, purpose="bench", actor="bench")
            db.session.rollback()
            return out

        def seal_ofd():
            out = ofd_service.sign_ofd(sm2_seal, doc, purpose="bench", actor="bench")
            db.session.rollback()
            return out

        results = {}
        for label, fn, size in (("PDF  PAdES B-LT, EC P-256", seal_pdf, len(pdf)),
                                ("OFD  GB/T 38540 v4, SM2 + TSA", seal_ofd, len(doc))):
            t, best, cpu, out = timed(fn, args.n)
            results[label] = (t, out)
            print(f"seal   {label:<32} {t * 1000:7.1f} ms (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
                  f"  {1 / t:6.1f} seals/s  +{len(out) - size:6d} bytes")
        for label, verify in (("PDF  PAdES B-LT, EC P-256", services.verify_pdf),
                              ("OFD  GB/T 38540 v4, SM2 + TSA", ofd_service.verify_ofd)):
            sealed = results[label][1]
            t, best, cpu, verdict = timed(lambda sealed=sealed, verify=verify: verify(sealed), args.n)
            assert verdict["valid"], verdict
            print(f"verify {label:<32} {t * 1000:7.1f} ms (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
                  f"  {1 / t:6.1f} verifications/s")
        ratio = results["OFD  GB/T 38540 v4, SM2 + TSA"][0] / results["PDF  PAdES B-LT, EC P-256"][0]
        print(f"OFD/SM2 sealing takes {ratio:.2f}x the PAdES/EC time (the limit is 2x)")


if __name__ == "__main__":
    main()
