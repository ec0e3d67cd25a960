"""The seal picture: a red round seal drawn as vector graphics (a one-page PDF).

Layout after GB/T 38540 practice and the common 公章 pattern: a ring, a
five-pointed star in the centre, the organisation's name along the upper arc
(characters upright, tops outward), the purpose text (e.g. 电子证照专用章)
across the lower part, and the 13-digit seal code along the bottom arc
(tops toward the centre). WenQuanYi Micro Hei is embedded as a subset.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from tongban.fonts import CJK_FONT, cjk_font

if TYPE_CHECKING:
    from reportlab.pdfgen import canvas

# reportlab is imported when a picture is drawn, not when the app starts
mm = 72 / 25.4  # points per millimetre (reportlab.lib.units.mm)

SEAL_RED = (0.87, 0.05, 0.07)
DIAMETER_MM = 40.0
PURPOSE_TEXT = {
    "official": "",
    "contract": "合同专用章",
    "finance": "财务专用章",
    "invoice": "发票专用章",
    "licence": "电子证照专用章",
}

def _star(c: canvas.Canvas, cx: float, cy: float, radius: float) -> None:
    inner = radius * math.sin(math.radians(18)) / math.sin(math.radians(126))
    path = c.beginPath()
    for i in range(10):
        r = radius if i % 2 == 0 else inner
        a = math.radians(90 + i * 36)
        x, y = cx + r * math.cos(a), cy + r * math.sin(a)
        if i == 0:
            path.moveTo(x, y)
        else:
            path.lineTo(x, y)
    path.close()
    c.drawPath(path, stroke=0, fill=1)


def _glyph(c: canvas.Canvas, ch: str, x: float, y: float, rotation: float, size: float, squeeze: float) -> None:
    """One character centred on (x, y) at its baseline, rotated by ``rotation`` degrees."""
    from reportlab.pdfbase import pdfmetrics

    c.saveState()
    c.translate(x, y)
    c.rotate(rotation)
    t = c.beginText()
    t.setTextRenderMode(2)  # fill and stroke: a heavier, ink-like stroke
    t.setFont(CJK_FONT, size)
    t.setHorizScale(squeeze * 100)
    width = pdfmetrics.stringWidth(ch, CJK_FONT, size) * squeeze
    t.setTextOrigin(-width / 2, 0)
    t.textOut(ch)
    c.drawText(t)
    c.restoreState()


def _arc_text(c: canvas.Canvas, text: str, cx: float, cy: float, radius: float, size: float, span: float,
              *, top: bool, squeeze: float) -> None:
    n = len(text)
    if n == 0:
        return
    step = span / (n - 1) if n > 1 else 0
    for i, ch in enumerate(text):
        if top:  # left to right over the top: from 90+span/2 down to 90-span/2, tops outward
            a = 90 + span / 2 - i * step
            rot = a - 90
        else:  # left to right along the bottom: from 270-span/2 up to 270+span/2, tops inward
            a = 270 - span / 2 + i * step
            rot = a + 90
        x, y = cx + radius * math.cos(math.radians(a)), cy + radius * math.sin(math.radians(a))
        _glyph(c, ch, x, y, rot, size, squeeze)


def render(org_name: str, purpose: str, code: str, *, diameter_mm: float = DIAMETER_MM) -> bytes:
    """The seal as a one-page PDF exactly ``diameter_mm`` wide and high (transparent background)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfgen import canvas

    if not 38 <= diameter_mm <= 42:
        raise ValueError("a seal is 38-42 mm across")
    cjk_font()
    d = diameter_mm * mm
    r = d / 2
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(d, d), pageCompression=1, initialFontName=CJK_FONT)
    c.setTitle(f"{org_name} {purpose}".strip())
    c.setAuthor("Tongban seal service")
    c.setFillColorRGB(*SEAL_RED)
    c.setStrokeColorRGB(*SEAL_RED)
    border = 1.15 * mm
    c.setLineWidth(border)
    c.circle(r, r, r - border / 2 - 0.2, stroke=1, fill=0)
    c.setLineWidth(0.25)

    _star(c, r, r + 0.02 * d, r * 0.30)

    # organisation name along the upper arc: the longer the name, the wider the arc and smaller the type
    name = org_name.strip()
    n = max(len(name), 1)
    span = min(215.0, max(150.0, 15.0 * n + 25))
    squeeze = 0.78 if n > 5 else 0.9
    approx_radius = r - border - 0.9 * mm - 4.5 * mm
    pitch = math.radians(span) * approx_radius / max(n - 1, 1)
    size = min(6.0 * mm, max(3.4 * mm, pitch * 0.98 / squeeze))
    baseline = r - border - 0.9 * mm - size * 0.86
    _arc_text(c, name, r, r, baseline, size, span, top=True, squeeze=squeeze)

    # purpose text across the lower part
    if purpose:
        psize = min(4.0 * mm, 24 * mm / max(len(purpose), 1))
        t = c.beginText()
        t.setTextRenderMode(2)
        t.setFont(CJK_FONT, psize)
        squeeze = 0.9
        t.setHorizScale(squeeze * 100)
        width = pdfmetrics.stringWidth(purpose, CJK_FONT, psize) * squeeze
        t.setTextOrigin(r - width / 2, r - 0.50 * r)
        t.textOut(purpose)
        c.drawText(t)

    # the 13-digit seal code along the bottom arc, small, tops toward the centre
    csize = 2.0 * mm
    c.setLineWidth(0.1)
    _arc_text(c, code, r, r, r - border - 0.6 * mm, csize, 3.6 * len(code), top=False, squeeze=0.9)

    c.showPage()
    c.save()
    return buf.getvalue()
