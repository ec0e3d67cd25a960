"""What the public verifier's limits cost an attacker and a genuine caller: the time to answer a
genuine one-seal PDF, 1,750 copies of one signature (the fuzzer's attack, as separate signature
dictionaries with padded contents), with the default cap and with the cap lifted (copies then
validated once each by signature value), and a self-parent page tree at the sealing service.
Prints figures; asserts nothing.

    .venv/bin/python bench/verify_limits.py [-n 5] [--copies 1750]

Runs against a throw-away instance (SQLite in a temporary folder).
"""

from __future__ import annotations

import argparse
import io

from _common import throwaway_app, timed


def with_copies(sealed: bytes, copies: int) -> bytes:
    """Fields whose values are copies of the first signature dictionary, each padded differently."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    w = IncrementalPdfFileWriter(io.BytesIO(sealed))
    form = w.root["/AcroForm"]
    original = form["/Fields"][0].get_object()["/V"]
    contents = bytes(original["/Contents"])
    for i in range(copies):
        copy = generic.DictionaryObject(dict(original.items()))
        copy[generic.NameObject("/Contents")] = generic.ByteStringObject(
            contents[:-4] + i.to_bytes(4, "big"))
        form["/Fields"].append(w.add_object(generic.DictionaryObject({
            generic.NameObject("/FT"): generic.NameObject("/Sig"),
            generic.NameObject("/T"): generic.TextStringObject(f"Copy{i}"),
            generic.NameObject("/V"): w.add_object(copy)})))
    w.update_container(form)
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def describe(out) -> str:
    if isinstance(out, dict):
        return f"valid={out['valid']} signatures={len(out['signatures'])}"
    return f"{getattr(out, 'status', '?')} {getattr(out, 'code', type(out).__name__)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--copies", type=int, default=1750)
    args = ap.parse_args()

    from tests.seal.malformed import CORPUS, GOOD
    from tongban.extensions import db

    with throwaway_app(quiet=("alembic",)) as app:
        import logging

        logging.getLogger("pyhanko").setLevel(logging.ERROR)
        from seal import services

        seal = services.create_seal(app.config["TONGBAN_AUTHORITY_USCC"], "基准章", "official")
        db.session.commit()
        sealed = services.sign_pdf(seal, GOOD, purpose="bench", actor="bench")
        attack = with_copies(sealed, args.copies)
        print(f"n={args.n} (median wall, median CPU); attack PDF {len(attack) // 1024} KiB with "
              f"{args.copies} copies")
        cases = [
            ("genuine one-seal PDF", sealed, {}),
            (f"{args.copies} copies, default cap", attack, {}),
            (f"{args.copies} copies, cap lifted (validated once)", attack,
             {"TONGBAN_VERIFY_MAX_SIGNATURES": args.copies + 10, "TONGBAN_VERIFY_MAX_SECONDS": 600}),
        ]
        for label, pdf, cfg in cases:
            saved = {k: app.config[k] for k in cfg}
            app.config.update(cfg)
            try:
                wall, _, cpu, out = timed(lambda pdf=pdf: services.verify_pdf(pdf), args.n, warm_up=False,
                                          catch=True)
            finally:
                app.config.update(saved)
            print(f"verify {label:<48} {wall * 1000:9.1f} ms (cpu {cpu * 1000:9.1f})  {describe(out)}")
        wall, _, cpu, out = timed(lambda: services.sign_pdf(seal, CORPUS["self_parent_pages"], purpose="bench",
                                                         actor="bench"), args.n, warm_up=False, catch=True)
        print(f"seal   {'self-parent page tree':<48} {wall * 1000:9.1f} ms (cpu {cpu * 1000:9.1f})  "
              f"{describe(out)}")
        db.session.rollback()


if __name__ == "__main__":
    main()
