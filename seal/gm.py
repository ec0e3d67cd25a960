"""国密 seals: an SM2 key, an SM2 seal certificate (GM/T 0015) and the GB/T 38540 v4 seal
data (SESeal) signed by the seal maker. Used for OFD documents (``seal/ofd.py``)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from keys import sm2, sm2ca
from people.accounts import get_org
from tongban import audit
from tongban.clock import utcnow
from tongban.errors import TongbanError, ValidationError
from tongban.extensions import db

from . import ses
from .models import KIND_NAMES, KINDS, Seal
from .picture import DIAMETER_MM, PURPOSE_TEXT, render

PICTURE_DPI = 300


class PictureFailed(TongbanError):
    code = "picture_failed"
    status = 500


def picture_png(picture_pdf: bytes, dpi: int = PICTURE_DPI) -> bytes:
    """The seal picture (a one-page vector PDF) as a PNG with a transparent background (poppler's
    pdftocairo): what GB/T 38540 readers draw at the signature's StampAnnot."""
    pdftocairo = shutil.which("pdftocairo")  # poppler-utils
    if pdftocairo is None:
        raise PictureFailed("pdftocairo (poppler-utils) is not installed")
    with tempfile.TemporaryDirectory(prefix="tb-seal-") as tmp:
        src, out = Path(tmp) / "seal.pdf", Path(tmp) / "seal"
        src.write_bytes(picture_pdf)
        try:
            # our own picture PDF and temporary paths: no outside input reaches the command line
            subprocess.run([pdftocairo, "-png", "-transp", "-singlefile", "-r", str(dpi), str(src), str(out)],  # noqa: S603
                           check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            raise PictureFailed(f"cannot draw the seal picture (pdftocairo, poppler-utils): {e}") from None
        png = (Path(tmp) / "seal.png").read_bytes()
    return _palette(png)


def _palette(png: bytes) -> bytes:
    """One red ink with anti-aliased edges: a 16-colour palette PNG with alpha is a quarter of the
    size, and the picture travels in every signature (SESeal in Seal.esl and in SignedValue.dat)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        out = io.BytesIO()
        im.quantize(colors=16, method=Image.Quantize.FASTOCTREE).save(out, "PNG", optimize=True)
    return out.getvalue()


def create_sm2_seal(org_uscc: str, name: str, kind: str = "official", *, backend: str | None = None,
                    valid_days: int, actor: str = "admin") -> Seal:
    """An SM2 seal: its key (local, encrypted under the KEK), its certificate from the SM2 CA, its
    picture and its SESeal v4 (esID = the 13-digit seal code) signed by the seal maker."""
    from .services import _new_code

    org = get_org(org_uscc)
    if kind not in KINDS:
        raise ValidationError(f"unknown seal kind {kind!r} (one of {', '.join(KINDS)})", "invalid_kind")
    name = (name or "").strip() or f"{org.name}{KIND_NAMES[kind]}"
    if len(name) > 200:
        raise ValidationError("seal name too long", "invalid_name")
    if not 1 <= valid_days <= 20 * 365:
        raise ValidationError("validity must be 1 day to 20 years", "invalid_validity")
    if backend not in (None, "local"):
        raise ValidationError("SM2 seal keys are held locally: the PKCS#11 token offers no SM2 mechanism",
                              "unsupported_backend")
    seal_id = secrets.token_hex(8)
    code = _new_code(org.uscc)
    key = sm2.generate()
    key_ref = f"seal-{seal_id}"
    cert = sm2ca.issue_seal_certificate(
        key.public_key(), common_name=name, org_name=org.name, org_uscc=org.uscc, seal_code=code, days=valid_days,
        private_blob=sm2.seal_key(key, f"seal-key:{key_ref}"), key_ref=key_ref)
    picture = render(org.name, PURPOSE_TEXT[kind], code)
    maker = sm2ca.sm2ca()["sm2-maker"]
    now = utcnow().replace(microsecond=0)
    eseal = ses.make_eseal(code=code, name=name, signer_cert_der=cert.cert_der, valid_start=cert.not_before,
                           valid_end=cert.not_after, picture=picture_png(picture), picture_type="png",
                           width_mm=int(DIAMETER_MM), height_mm=int(DIAMETER_MM), maker_cert_der=maker.cert.dump(),
                           maker_key=maker.private_key, created=now)
    seal = Seal(id=seal_id, org_id=org.id, name=name, kind=kind, code=code, status="active",
                valid_from=cert.not_before, valid_until=cert.not_after, alg="sm2", cert_serial=cert.serial,
                picture=picture, eseal=eseal, created_at=now)
    db.session.add(seal)
    db.session.flush()
    audit.record("seal.created", actor=actor, object=f"seal:{seal_id}",
                 detail={"org": org.uscc, "name": name, "kind": kind, "code": code, "alg": "sm2",
                         "backend": "local", "cert_serial": cert.serial, "format": "GB/T 38540 v4"})
    return seal


def eseal_der(seal: Seal) -> bytes:
    if seal.alg != "sm2" or not seal.eseal:
        raise ValidationError("only SM2 seals have GB/T 38540 seal data (seals create --alg sm2)", "not_sm2")
    return bytes(seal.eseal)
