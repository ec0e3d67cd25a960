"""E-licences as OFD (GB/T 36905's file format, GB/T 33190), sealed with the issuer's SM2
licence seal (GB/T 38540 v4 signature).

The page is the licence's own layout (``licence/pdf.py``, the same drawing as the PDF) placed
as the page image, with the text as real OFD text objects over it (transparent, so readers can
select and search it and the seal can be anchored), the identifier and metadata in
``DocInfo/CustomDatas`` (``ZZBS`` = the e-licence identifier) and the seal where the PDF has it.
OFDs are sealed when asked for (the PDF stays the stored original), each one a fresh signature.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from flask import current_app
from lxml import etree
from sqlalchemy import select

from seal.ofdwriter import OfdBuilder
from tongban.clock import utcnow
from tongban.errors import TongbanError
from tongban.extensions import db

from . import services
from .errors import NoLicenceSeal
from .models import Licence, LicenceOfd

FORMATS = ("pdf", "ofd")
PT_TO_MM = 25.4 / 72
RENDER_DPI = 200


class RenderFailed(TongbanError):
    code = "render_failed"
    status = 500


def file_format(t) -> str:
    """The type's default file format: ``layout.file_format`` (``pdf`` unless a type says ``ofd``)."""
    fmt = str((t.layout or {}).get("file_format", "pdf")).lower()
    return fmt if fmt in FORMATS else "pdf"


def _poppler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RenderFailed(f"{tool} (poppler-utils) is not installed")
    return path


def _page_png_and_words(pdf: bytes, page: int) -> tuple[bytes, list[tuple[float, float, float, float, str]],
                                                         tuple[float, float]]:
    """The rendered page (PNG), its words with their boxes (pt, origin top left) and its size (pt)."""
    with tempfile.TemporaryDirectory(prefix="tb-lic-") as tmp:
        src = Path(tmp) / "l.pdf"
        src.write_bytes(pdf)
        n = str(page + 1)
        try:
            # our own rendered licence and temporary paths: no outside input reaches the command line
            subprocess.run([_poppler("pdftocairo"), "-png", "-singlefile", "-r", str(RENDER_DPI), "-f", n, "-l", n,  # noqa: S603
                            str(src), str(Path(tmp) / "p")], check=True, capture_output=True, timeout=60)
            subprocess.run([_poppler("pdftotext"), "-bbox", "-f", n, "-l", n, str(src), str(Path(tmp) / "w.html")],  # noqa: S603
                           check=True, capture_output=True, timeout=60)
        except subprocess.SubprocessError as e:
            raise RenderFailed(f"cannot render the licence page: {e}") from None
        png = (Path(tmp) / "p.png").read_bytes()
        html = etree.fromstring((Path(tmp) / "w.html").read_bytes(), etree.HTMLParser(encoding="utf-8"))
    page_el = html.find(".//page")
    size = (float(page_el.get("width")), float(page_el.get("height")))
    words = [(float(w.get("xmin")), float(w.get("ymin")), float(w.get("xmax")), float(w.get("ymax")), w.text or "")
             for w in html.iter("word") if (w.text or "").strip()]
    return png, words, size


def render_ofd(lic: Licence, watermark: str | None = None) -> tuple[bytes, int, tuple[float, float]]:
    """The unsealed OFD of ``lic``, the page index of its seal and the seal's centre (mm, top left)."""
    from . import pdf

    t = lic.type
    rendered = pdf.render(services.sheet(lic, t, watermark))
    png, words, (w_pt, h_pt) = _page_png_and_words(rendered.pdf, rendered.page)
    b = OfdBuilder(title=f"{lic.type_name} {lic.holder_name}", author=lic.issuer_name, creator="Tongban 通办 e-licence",
                   custom={"ZZBS": lic.identifier, "licence_type": lic.type_code, "licence_type_name": lic.type_name,
                           "issuer": lic.issuer_name, "issuer_uscc": lic.issuer_uscc, "holder": lic.holder_name,
                           "number": lic.number or "", "issued_on": lic.issued_on.isoformat(),
                           "valid_until": lic.valid_until.isoformat() if lic.valid_until else "长期",
                           "verify_url": services.verify_url(lic.verify_code)})
    w_mm, h_mm = w_pt * PT_TO_MM, h_pt * PT_TO_MM
    b.add_page(round(w_mm, 2), round(h_mm, 2))  # a licence is one page: the one the seal is on
    b.image(0, 0, w_mm, h_mm, png)
    for x1, y1, x2, y2, text in words:  # transparent text over the picture: searchable, selectable
        height = (y2 - y1) * PT_TO_MM
        b.text(x1 * PT_TO_MM, y2 * PT_TO_MM - height * 0.2, text, size=max(height * 0.8, 0.5),
               color=(0, 0, 0), width=(x2 - x1) * PT_TO_MM)
    data = b.build()
    data = _transparent_text(data)
    x1, y1, x2, y2 = rendered.seal_box  # PDF points, origin bottom left
    centre = ((x1 + x2) / 2 * PT_TO_MM, (h_pt - (y1 + y2) / 2) * PT_TO_MM)
    return data, 0, centre


def _transparent_text(data: bytes) -> bytes:
    """Text objects drawn with alpha 0 (the picture underneath shows the text)."""
    from seal.ofd import Package

    pkg = Package.load(data, max_total=64 * 1024 * 1024)
    for name in [n for n in pkg.files if n.endswith("/Content.xml")]:
        pkg.files[name] = pkg.files[name].replace(b'<ofd:FillColor Value="0 0 0"/>',
                                                  b'<ofd:FillColor Value="0 0 0" Alpha="0"/>')
    return pkg.dump()


def ofd_seal(uscc: str):
    """The issuer's SM2 licence seal; the operating authority's is made on first use."""
    from seal import services as seal_services
    from seal.models import Seal

    seal = seal_services.get_active_seal(uscc, kind="licence", alg="sm2")
    if seal is None and uscc == current_app.config["TONGBAN_AUTHORITY_USCC"]:
        org = services._org(uscc)
        seal = seal_services.create_seal(uscc, f"{org.name}电子证照专用章", "licence", alg="sm2", actor="system")
    if seal is None or not isinstance(seal, Seal):
        raise NoLicenceSeal(f"organisation {uscc} has no active SM2 licence seal "
                            "(seals create --alg sm2 --kind licence)")
    return seal


def sealed_ofd(lic: Licence, *, actor: str, purpose: str | None = None, watermark: str | None = None) -> bytes:
    """The licence as an OFD sealed with its issuer's SM2 licence seal (at the PDF's seal place)."""
    from seal import ofd

    seal = ofd_seal(lic.issuer_uscc)
    data, page, (cx, cy) = render_ofd(lic, watermark)
    size = ofd.SEAL_SIZE_MM
    sealed = _sign_at(seal, data, page=page, box=(cx - size / 2, cy - size / 2, size, size), actor=actor,
                      purpose=purpose or f"电子证照OFD {lic.identifier}")
    # what verify_file binds a licence OFD to: the very package handed out (like a PDF's signed revision)
    db.session.add(LicenceOfd(licence_id=lic.id, sha256=hashlib.sha256(sealed).hexdigest(),
                              copy=watermark is not None, created_at=utcnow()))
    db.session.flush()
    return sealed


def _sign_at(seal, data: bytes, *, page: int, box, actor: str, purpose: str) -> bytes:
    from seal import ofd

    return ofd.sign_ofd(seal, data, purpose=purpose, actor=actor, page=page, box=box, licence_use=True)


_ZZBS = re.compile(r"^1\.2\.156\.3005\.2\.[0-9A-Z.]{30,60}$")


def identifier_in_ofd(data: bytes) -> str | None:
    """The identifier in OFD.xml's ``CustomData Name="ZZBS"`` (a file the seal covers)."""
    from seal.ofd import O, Package

    root = Package.load(data).xml("OFD.xml")
    for el in root.iter(O + "CustomData"):
        if el.get("Name") == "ZZBS" and _ZZBS.match((el.text or "").strip()):
            return el.text.strip()
    return None


def verify_file(data: bytes) -> dict:
    """The seal check plus the current status of a licence OFD, bound like a PDF's: the seal is
    valid and covers the whole package (so the identifier in OFD.xml is the sealed one), it is a
    licence seal of the licence's issuer, and the package is byte for byte one Tongban sealed for
    that licence (its SHA-256 stored in ``licence_ofds`` when it was handed out). The licence is
    named only then: a forged package does not get to show somebody else's licence."""
    from seal.models import Seal
    from seal.ofd import verify_ofd

    seal_verdict = verify_ofd(data)
    ident = identifier_in_ofd(data)
    lic = db.session.execute(select(Licence).where(Licence.identifier == ident)).scalar_one_or_none() \
        if ident else None
    if lic is None:
        return {"valid": False, "status": "unknown", "licence": None, "seal": seal_verdict}
    bound = False
    if seal_verdict.get("valid") and seal_verdict["signatures"]:
        last = seal_verdict["signatures"][-1]
        row = db.session.execute(select(Seal).where(Seal.code == last["seal_code"])).scalar_one_or_none()
        bound = (row is not None and row.kind == "licence" and row.org.uscc == lic.issuer_uscc
                 and last["organisation_uscc"] == lic.issuer_uscc)
    issued = db.session.execute(select(LicenceOfd).where(
        LicenceOfd.licence_id == lic.id, LicenceOfd.sha256 == hashlib.sha256(bytes(data)).hexdigest())
    ).scalar_one_or_none()
    if not (bool(seal_verdict.get("valid")) and bound and issued is not None):
        return {"valid": False, "status": "unknown", "licence": None, "seal": seal_verdict, "format": "ofd",
                "issued_version": False}
    view = services.public_view(lic)
    return {"valid": view["valid"], "status": view["status"], "licence": view["licence"], "seal": seal_verdict,
            "format": "ofd", "issued_version": True, "copy": issued.copy}


__all__ = ["file_format", "identifier_in_ofd", "render_ofd", "sealed_ofd", "verify_file"]
