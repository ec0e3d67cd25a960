"""Seal fixtures: organisations with seals, a plain PDF, an NSS database trusting our root."""

from __future__ import annotations

import io
import subprocess

import pytest

from tests.conftest import USCC


def make_pdf(pages: int = 2, text: str = "Tongban test document") -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595, 842))
    for i in range(pages):
        c.drawString(72, 770, f"{text} - page {i + 1}")
        c.showPage()
    c.save()
    return buf.getvalue()


@pytest.fixture
def plain_pdf() -> bytes:
    return make_pdf()


@pytest.fixture
def org(app):
    from people import accounts
    from tongban.extensions import db

    o = accounts.create_org(USCC, "测试科技有限公司")
    db.session.commit()
    return o


@pytest.fixture
def seal(app, org):
    from seal import services
    from tongban.extensions import db

    s = services.create_seal(org.uscc, "测试科技有限公司合同专用章", "contract")
    db.session.commit()
    return s


@pytest.fixture
def authority_seal(app):
    from seal import services

    return services.get_active_seal(app.config["TONGBAN_AUTHORITY_USCC"], "licence")


@pytest.fixture(scope="session")
def nssdb(base_app, tmp_path_factory):
    """An NSS database (for poppler's pdfsig) trusting the seal CA's root."""
    from keys.ca import root_pem

    d = tmp_path_factory.mktemp("nss")
    with base_app.app_context():
        (d / "root.pem").write_text(root_pem())
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{d}"], check=True, capture_output=True)
    subprocess.run(["certutil", "-A", "-t", "CT,C,C", "-n", "tongban-root", "-d", f"sql:{d}", "-i",
                    str(d / "root.pem")], check=True, capture_output=True)
    return f"sql:{d}"


def pdfsig(nssdb: str, pdf: bytes, tmp_path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    r = subprocess.run(["pdfsig", "-nssdir", nssdb, str(path)], capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr
