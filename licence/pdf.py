"""The licence PDF: reportlab with an embedded CJK font, laid out like each paper original.

Layouts (``layout.kind`` in the catalogue): ``permit`` (business licence and other
landscape permits and registration certificates), ``card`` (social security and
disability cards), ``booklet`` (marriage and divorce certificates), ``diploma``
(degree and graduation certificates), ``form`` (the birth certificate). Every page
carries the data items, issuer, dates, the identifier and a QR code of the
``/v/<code>`` URL (ECC level M, vector squares, >= 20 mm); ``render`` returns where
the issuer's seal goes, and the caller seals the PDF there.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import date

from reportlab.lib.colors import Color, HexColor, black
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas

from tongban.fonts import cjk_font
from tongban.qr import qr_matrix

PAGES = {"A4": (210 * mm, 297 * mm), "A4L": (297 * mm, 210 * mm), "A5L": (210 * mm, 148 * mm),
         "card": (148 * mm, 105 * mm)}
SEAL_SIZE = 40 * mm
QR_MIN = 20 * mm
RED = HexColor("#b3121b")
BORDER = HexColor("#8a5a2b")
INK = HexColor("#1f2329")
MUTED = HexColor("#5f6670")
@dataclass
class Sheet:
    """What a page shows; built by the service from a licence and its type."""

    type_name: str
    layout: dict
    items: list[dict]
    data: dict
    holder_kind: str
    holder_id: str
    holder_name: str
    issuer_name: str
    issued_on: date
    valid_from: date
    valid_until: date | None
    identifier: str
    number: str
    verify_url: str
    watermark: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Rendered:
    pdf: bytes
    seal_box: tuple[float, float, float, float]
    page: int = 0


def cn_date(d: date | str | None) -> str:
    if d is None or d == "":
        return "长期"
    if isinstance(d, str):
        try:
            d = date.fromisoformat(d[:10])
        except ValueError:
            return str(d)
    return f"{d.year}年{d.month:02d}月{d.day:02d}日"


def draw_qr(c: Canvas, text: str, x: float, y: float, size: float) -> None:
    """The QR code as filled vector rectangles (runs of dark modules), quiet zone of 4 modules."""
    matrix = qr_matrix(text)
    n = len(matrix)
    module = size / (n + 8)
    c.saveState()
    c.setFillColor(Color(1, 1, 1))
    c.rect(x, y, size, size, stroke=0, fill=1)
    c.setFillColor(black)
    ox, oy = x + 4 * module, y + 4 * module
    for r, row in enumerate(matrix):
        col = 0
        while col < n:
            if row[col]:
                start = col
                while col < n and row[col]:
                    col += 1
                c.rect(ox + start * module, oy + (n - 1 - r) * module, (col - start) * module, module,
                       stroke=0, fill=1)
            else:
                col += 1
    c.restoreState()


# a number or Latin word, with the unit an address number carries (89号, 3栋, 12层)
_UNBREAKABLE = re.compile(r"(?:[0-9A-Za-z][0-9A-Za-z.\-－/]*[0-9A-Za-z]|[0-9A-Za-z])[号室栋幢层楼弄]?")


def split_cjk(text: str, font: str, size: float, width: float) -> list[str]:
    """Break a line anywhere between Chinese characters (Chinese has no spaces), never before closing
    punctuation and never inside a number or Latin word (an address's 89号, a licence number): such a
    run moves whole to the next line, unless it is wider than a line by itself."""
    pieces: list[str] = []
    pos = 0
    for m in _UNBREAKABLE.finditer(text):
        pieces.extend(text[pos:m.start()])
        pieces.append(m.group(0))
        pos = m.end()
    pieces.extend(text[pos:])
    lines, line, w = [], "", 0.0
    for piece in pieces:
        pw = pdfmetrics.stringWidth(piece, font, size)
        if len(piece) > 1 and pw > width:  # longer than a whole line by itself: break it by character
            for ch in piece:
                cw = pdfmetrics.stringWidth(ch, font, size)
                if line and w + cw > width:
                    lines.append(line)
                    line, w = "", 0.0
                line += ch
                w += cw
            continue
        if line and w + pw > width and piece not in "，。；：、）》”’！？,.;:)":
            lines.append(line)
            line, w = "", 0.0
        line += piece
        w += pw
    lines.append(line)
    return lines


def _value(item: dict, raw) -> str:
    if raw in (None, ""):
        return "—"
    if item.get("type") == "date":
        return cn_date(str(raw))
    return str(raw)


class _Page:
    def __init__(self, sheet: Sheet):
        self.s = sheet
        self.font = cjk_font()
        self.w, self.h = PAGES.get(sheet.layout.get("page", "A4L"), PAGES["A4L"])
        self.buf = io.BytesIO()
        self.c = Canvas(self.buf, pagesize=(self.w, self.h), pageCompression=1)
        c = self.c
        c.setTitle(f"{sheet.type_name} {sheet.holder_name}")
        c.setAuthor(sheet.issuer_name)
        c.setSubject(f"电子证照 {sheet.type_name}")
        c.setKeywords(f"ZZBS:{sheet.identifier}")
        c.setCreator("Tongban 通办 e-licence")

    # ---------------------------------------------------------------- primitives
    def text(self, x, y, s, size=11, color=INK, anchor="left", spacing=0.0):
        c = self.c
        c.setFillColor(color)
        c.setFont(self.font, size)
        if spacing:
            t = c.beginText()
            t.setFont(self.font, size)
            t.setCharSpace(spacing)
            width = pdfmetrics.stringWidth(s, self.font, size) + spacing * (len(s) - 1)
            x0 = x - width / 2 if anchor == "center" else x - width if anchor == "right" else x
            t.setTextOrigin(x0, y)
            t.textOut(s)
            t.setCharSpace(0)  # the text state outlives BT/ET: reset it for what follows
            c.drawText(t)
            return
        {"left": c.drawString, "center": c.drawCentredString, "right": c.drawRightString}[anchor](x, y, s)

    def wrapped(self, x, y, s, width, size=11, leading=None, color=INK) -> float:
        leading = leading or size * 1.5
        lines = []
        for para in str(s).split("\n"):
            lines.extend(split_cjk(para, self.font, size, width))
        for line in lines:
            self.text(x, y, line, size, color)
            y -= leading
        return y

    def field(self, x, y, label, value, label_w, width, size=11) -> float:
        self.text(x, y, label, size, MUTED)
        return self.wrapped(x + label_w, y, value, width - label_w, size) - 2 * mm

    def border(self, inset=8 * mm, double=True, color=BORDER):
        c = self.c
        c.setStrokeColor(color)
        c.setLineWidth(2.2)
        c.rect(inset, inset, self.w - 2 * inset, self.h - 2 * inset)
        if double:
            c.setLineWidth(0.6)
            c.rect(inset + 2.2 * mm, inset + 2.2 * mm, self.w - 2 * inset - 4.4 * mm, self.h - 2 * inset - 4.4 * mm)

    def qr_block(self, x, y, size=24 * mm, caption=True):
        size = max(size, QR_MIN)
        draw_qr(self.c, self.s.verify_url, x, y, size)
        if caption:
            self.text(x + size / 2, y - 4 * mm, "扫码核验", 8, MUTED, "center")

    def identifier_line(self, y=None, size=7):
        y = 4 * mm if y is None else y
        self.text(self.w / 2, y, f"电子证照标识 {self.s.identifier}", size, MUTED, "center")

    def issuer_block(self, cx, y, size=12) -> tuple[float, float, float, float]:
        """Issuer name and issue date, right-aligned at ``cx``; returns the seal box centred on them."""
        self.text(cx, y + 8 * mm, f"发证机关：{self.s.issuer_name}", size, INK, "right")
        self.text(cx, y, cn_date(self.s.issued_on), size, INK, "right")
        name_w = pdfmetrics.stringWidth(self.s.issuer_name, self.font, size)
        centre_x = cx - min(name_w, SEAL_SIZE) / 2
        centre_y = y + 5 * mm
        x1 = max(min(centre_x - SEAL_SIZE / 2, self.w - SEAL_SIZE - 2 * mm), 2 * mm)
        y1 = max(min(centre_y - SEAL_SIZE / 2, self.h - SEAL_SIZE - 2 * mm), 2 * mm)
        return (x1, y1, x1 + SEAL_SIZE, y1 + SEAL_SIZE)

    def validity_text(self) -> str:
        if self.s.valid_until is None:
            return f"{cn_date(self.s.valid_from)} 至 长期"
        return f"{cn_date(self.s.valid_from)} 至 {cn_date(self.s.valid_until)}"

    def rows(self) -> list[tuple[str, str, dict]]:
        return [(i["label"], _value(i, self.s.data.get(i["name"])), i) for i in self.s.items]

    def watermark(self):
        if not self.s.watermark:
            return
        c = self.c
        c.saveState()
        c.setFillColor(Color(0.55, 0.55, 0.6, alpha=0.22))
        c.setFont(self.font, 13)
        c.translate(self.w / 2, self.h / 2)
        c.rotate(30)
        step_y, step_x = 28 * mm, pdfmetrics.stringWidth(self.s.watermark, self.font, 13) + 25 * mm
        span = max(self.w, self.h)
        y = -span
        while y < span:
            x = -span + ((y // step_y) % 2) * step_x / 2
            while x < span:
                c.drawString(x, y, self.s.watermark)
                x += step_x
            y += step_y
        c.restoreState()

    def finish(self, box) -> Rendered:
        self.watermark()
        self.c.showPage()
        self.c.save()
        return Rendered(self.buf.getvalue(), tuple(round(v, 2) for v in box))


# ---------------------------------------------------------------- layouts


def _permit(p: _Page) -> Rendered:
    s, w, h = p.s, p.w, p.h
    p.border()
    p.text(w / 2, h - 38 * mm, s.layout.get("title", s.type_name), 34, INK, "center", spacing=10)
    label = s.layout.get("number_label") or ("统一社会信用代码" if s.holder_kind == "organisation" else "证号")
    number = s.holder_id if label == "统一社会信用代码" else (s.number or s.holder_id)
    p.text(22 * mm, h - 22 * mm, f"{label}  {number}", 11, INK)
    p.text(w - 22 * mm, h - 22 * mm, f"证照编号  {s.number}" if s.number and s.number != number else "",
           10, MUTED, "right")
    rows = [("名\u3000\u3000称", s.holder_name, {}), *p.rows(), ("有效期限", p.validity_text(), {})]
    long_rows = [r for r in rows if r[2].get("type") == "textarea"]
    short_rows = [r for r in rows if r[2].get("type") != "textarea"]
    half = (len(short_rows) + 1) // 2
    col_w = (w - 60 * mm) / 2
    y_left = y_right = h - 58 * mm
    for lbl, val, _ in short_rows[:half]:
        y_left = p.field(26 * mm, y_left, lbl, val, 34 * mm, col_w, 12.5) - 1.5 * mm
    for lbl, val, _ in short_rows[half:]:
        y_right = p.field(26 * mm + col_w + 8 * mm, y_right, lbl, val, 34 * mm, col_w, 12.5) - 1.5 * mm
    for lbl, val, _ in long_rows:
        y_left = p.field(26 * mm, y_left, lbl, val, 34 * mm, col_w, 11.5)
    p.qr_block(24 * mm, 20 * mm, 26 * mm)
    p.text(54 * mm, 30 * mm, "扫描二维码登录电子证照核验页面", 8, MUTED)
    p.text(54 * mm, 25 * mm, "了解更多登记、许可、备案、监管信息", 8, MUTED)
    box = p.issuer_block(w - 26 * mm, 26 * mm, 13)
    p.identifier_line(12 * mm)
    return p.finish(box)


def _card(p: _Page) -> Rendered:
    s, w, h = p.s, p.w, p.h
    c = p.c
    c.setStrokeColor(HexColor("#2f6db5"))
    c.setLineWidth(1.2)
    c.roundRect(4 * mm, 4 * mm, w - 8 * mm, h - 8 * mm, 4 * mm)
    c.setFillColor(HexColor("#2f6db5"))
    c.roundRect(4 * mm, h - 20 * mm, w - 8 * mm, 16 * mm, 4 * mm, stroke=0, fill=1)
    p.text(10 * mm, h - 11 * mm, s.layout.get("subtitle", ""), 8, Color(1, 1, 1))
    p.text(10 * mm, h - 17 * mm, s.layout.get("title", s.type_name), 15, Color(1, 1, 1), spacing=3)
    # photo placeholder, as on the physical card
    c.setStrokeColor(MUTED)
    c.setLineWidth(0.5)
    c.setDash(2, 2)
    c.rect(w - 34 * mm, h - 52 * mm, 24 * mm, 28 * mm)
    c.setDash()
    p.text(w - 22 * mm, h - 39 * mm, "照片", 8, MUTED, "center")
    id_label = "社会保障号码" if "社会保障" in s.type_name else "身份证号"
    rows = [("姓　　名", s.holder_name), (id_label, s.holder_id)] + [(lbl, v) for lbl, v, _ in p.rows()]
    rows.append(("有效期限", p.validity_text()))
    y = h - 27 * mm
    for lbl, val in rows:
        y = p.field(9 * mm, y, lbl, val, 24 * mm, w - 48 * mm, 8.5) + 1 * mm
    p.qr_block(w - 33 * mm, 9 * mm, 22 * mm, caption=False)
    box = (w - 32 * mm - SEAL_SIZE, 4 * mm, w - 32 * mm, 4 * mm + SEAL_SIZE)
    p.text(w - 36 * mm, 14 * mm, f"发证机关：{s.issuer_name}", 7.5, INK, "right")
    p.text(w - 36 * mm, 10 * mm, f"签发日期：{cn_date(s.issued_on)}", 7.5, INK, "right")
    p.text(w / 2, 1.5 * mm, f"电子证照标识 {s.identifier}", 5.5, MUTED, "center")
    return p.finish(box)


def _booklet(p: _Page) -> Rendered:
    s, w, h = p.s, p.w, p.h
    c = p.c
    c.setFillColor(HexColor("#fbf3ee"))
    c.rect(0, 0, w, h, stroke=0, fill=1)
    c.setStrokeColor(RED)
    c.setLineWidth(0.8)
    c.line(w / 2, 10 * mm, w / 2, h - 10 * mm)
    p.border(6 * mm, double=False, color=RED)
    # left page: title, statement, registry, date, seal; QR
    p.text(w / 4, h - 30 * mm, s.layout.get("title", s.type_name), 26, RED, "center", spacing=8)
    p.wrapped(16 * mm, h - 46 * mm, s.layout.get("statement", ""), w / 2 - 30 * mm, 10)
    box = p.issuer_block(w / 2 - 12 * mm, 40 * mm, 10)
    p.qr_block(14 * mm, 14 * mm, 22 * mm, caption=False)
    # right page: holder, registration items, both parties
    x = w / 2 + 10 * mm
    y = h - 22 * mm
    data = {i["name"]: v for (_, v, i) in p.rows()}
    lbl = {i["name"]: i["label"] for i in s.items}
    y = p.field(x, y, "持 证 人", s.holder_name, 24 * mm, w / 2 - 20 * mm, 10)
    for key in ("registered_on", "cert_no"):
        if key in data:
            y = p.field(x, y, lbl[key], data[key], 24 * mm, w / 2 - 20 * mm, 10)
    y = p.field(x, y, "备　　注", s.data.get("note") or "", 24 * mm, w / 2 - 20 * mm, 10)
    c.setStrokeColor(RED)
    c.line(x, y + 3 * mm, w - 12 * mm, y + 3 * mm)
    y -= 2 * mm
    y = p.field(x, y, "姓　　名", s.holder_name, 24 * mm, w / 2 - 20 * mm, 10)
    y = p.field(x, y, "身份证件号", s.holder_id, 24 * mm, w / 2 - 20 * mm, 10)
    y -= 1 * mm
    for key, v in data.items():
        if key.startswith("spouse_"):
            y = p.field(x, y, lbl[key].replace("配偶", "").replace("原", "") or lbl[key], v, 24 * mm,
                        w / 2 - 20 * mm, 10)
    p.text(w / 2, 1.8 * mm, f"电子证照标识 {s.identifier}", 6, MUTED, "center")
    return p.finish(box)


def _diploma(p: _Page) -> Rendered:
    s, w, h = p.s, p.w, p.h
    p.border(10 * mm, color=HexColor("#9a7b2f"))
    p.text(w / 2, h - 40 * mm, s.layout.get("title", s.type_name), 32, INK, "center", spacing=12)
    c = p.c
    c.setStrokeColor(MUTED)
    c.setDash(2, 2)
    c.rect(28 * mm, h - 80 * mm, 30 * mm, 40 * mm)
    c.setDash()
    p.text(43 * mm, h - 61 * mm, "照片", 9, MUTED, "center")
    values = {"holder_name": s.holder_name, **{i["name"]: _value(i, s.data.get(i["name"])) for i in s.items}}
    try:
        prose = s.layout.get("text", "").format_map(values)
    except (KeyError, ValueError):
        prose = "，".join(f"{i['label']}{_value(i, s.data.get(i['name']))}" for i in s.items)
    p.wrapped(70 * mm, h - 58 * mm, "　　" + prose, w - 100 * mm, 15, 15 * 1.9)
    cert = s.data.get("cert_no") or s.number
    p.text(28 * mm, 48 * mm, f"证书编号：{cert}", 11)
    p.text(28 * mm, 42 * mm, f"身份证号：{s.holder_id}", 11)
    p.qr_block(28 * mm, 16 * mm, 22 * mm, caption=False)
    box = p.issuer_block(w - 34 * mm, 30 * mm, 13)
    p.identifier_line(12.5 * mm)
    return p.finish(box)


def _form(p: _Page) -> Rendered:
    s, w, h = p.s, p.w, p.h
    c = p.c
    p.border(10 * mm, double=False, color=HexColor("#3c6e47"))
    p.text(w / 2, h - 30 * mm, s.layout.get("title", s.type_name), 24, INK, "center", spacing=6)
    if s.layout.get("subtitle"):
        p.text(w / 2, h - 38 * mm, s.layout["subtitle"], 10, MUTED, "center")
    rows = [("新生儿姓名" if "出生" in s.type_name else "姓名", s.holder_name),
            ("身份证号" if s.holder_kind == "citizen" else "代码", s.holder_id)]
    rows += [(lbl, v) for lbl, v, _ in p.rows()]
    x0, x1 = 20 * mm, w - 20 * mm
    top = h - 48 * mm
    row_h = 13 * mm
    cell_w = (x1 - x0) / 2
    c.setStrokeColor(HexColor("#3c6e47"))
    c.setLineWidth(0.6)
    n_rows = (len(rows) + 1) // 2
    for i, (lbl, val) in enumerate(rows):
        r, col = divmod(i, 2)
        cx = x0 + col * cell_w
        cy = top - (r + 1) * row_h
        c.rect(cx, cy, cell_w, row_h)
        c.line(cx + 40 * mm, cy, cx + 40 * mm, cy + row_h)
        lsize = 9 if pdfmetrics.stringWidth(lbl, p.font, 9) < 37 * mm else 7.5
        p.text(cx + 2 * mm, cy + 4.5 * mm, lbl, lsize, MUTED)
        size = 10 if pdfmetrics.stringWidth(val, p.font, 10) < cell_w - 44 * mm else 7.5
        p.text(cx + 42 * mm, cy + 4.5 * mm, val, size)
    if len(rows) % 2:
        c.rect(x0 + cell_w, top - n_rows * row_h, cell_w, row_h)
    p.qr_block(22 * mm, 26 * mm, 26 * mm)
    box = p.issuer_block(w - 24 * mm, 36 * mm, 12)
    p.identifier_line(14 * mm, 8)
    return p.finish(box)


LAYOUTS = {"permit": _permit, "card": _card, "booklet": _booklet, "diploma": _diploma, "form": _form}


def render(sheet: Sheet) -> Rendered:
    kind = sheet.layout.get("kind", "permit")
    return LAYOUTS.get(kind, _permit)(_Page(sheet))
