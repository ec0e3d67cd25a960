"""Writing OFD documents (GB/T 33190-2016) with lxml: text, lines, rectangles and PNG images on
A4-sized (or any) pages, in millimetres with the origin top left (OFD's coordinate system).

Enough for our own documents (e-licences, test documents); the package layout is the usual
one::

    OFD.xml                       entry: DocInfo (ID, title, dates, custom metadata), DocRoot
    Doc_0/Document.xml            CommonData (MaxUnitID, PageArea, PublicRes, DocumentRes), Pages
    Doc_0/PublicRes.xml           fonts
    Doc_0/DocumentRes.xml         multimedia (images), files under Doc_0/Res/
    Doc_0/Pages/Page_N/Content.xml
"""

from __future__ import annotations

import io
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

NS = "http://www.ofdspec.org/2016"
O = f"{{{NS}}}"  # noqa: E741


def _fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") or "0"


@dataclass
class _Page:
    width: float
    height: float
    items: list = field(default_factory=list)


class OfdBuilder:
    """``b = OfdBuilder(title=...); b.add_page(); b.text(...); b.image(...); data = b.build()``."""

    def __init__(self, *, title: str = "", author: str = "Tongban", creator: str = "Tongban 通办",
                 custom: dict[str, str] | None = None, font_name: str = "宋体",
                 created: datetime | None = None):
        self.title, self.author, self.creator = title, author, creator
        self.custom = dict(custom or {})
        self.font_name = font_name
        self.created = created or datetime.now()
        self.pages: list[_Page] = []
        self.images: list[bytes] = []

    def add_page(self, width: float = 210.0, height: float = 297.0) -> OfdBuilder:
        self.pages.append(_Page(width, height))
        return self

    @property
    def _page(self) -> _Page:
        if not self.pages:
            self.add_page()
        return self.pages[-1]

    def text(self, x: float, y: float, text: str, *, size: float = 4.2, bold: bool = False,
             color: tuple[int, int, int] = (0, 0, 0), width: float | None = None) -> OfdBuilder:
        """``text`` with its baseline at ``y`` (mm), starting at ``x``; ``size`` in mm."""
        self._page.items.append(("text", x, y, text, size, bold, color, width))
        return self

    def line(self, x1: float, y1: float, x2: float, y2: float, *, width: float = 0.3,
             color: tuple[int, int, int] = (0, 0, 0)) -> OfdBuilder:
        self._page.items.append(("line", x1, y1, x2, y2, width, color))
        return self

    def rect(self, x: float, y: float, w: float, h: float, *, width: float = 0.4,
             color: tuple[int, int, int] = (0, 0, 0)) -> OfdBuilder:
        self._page.items.append(("rect", x, y, w, h, width, color))
        return self

    def image(self, x: float, y: float, w: float, h: float, png: bytes) -> OfdBuilder:
        self.images.append(png)
        self._page.items.append(("image", x, y, w, h, len(self.images) - 1))
        return self

    # ---------------------------------------------------------------- output

    def build(self) -> bytes:
        if not self.pages:
            self.add_page()
        next_id = iter(range(1, 10**9))
        files: dict[str, bytes] = {}
        font_id = next(next_id)
        image_ids = [next(next_id) for _ in self.images]
        page_ids = [next(next_id) for _ in self.pages]
        page_files = []
        for n, page in enumerate(self.pages):
            root = etree.Element(O + "Page", nsmap={"ofd": NS})
            area = etree.SubElement(root, O + "Area")
            etree.SubElement(area, O + "PhysicalBox").text = f"0 0 {_fmt(page.width)} {_fmt(page.height)}"
            content = etree.SubElement(root, O + "Content")
            layer = etree.SubElement(content, O + "Layer", ID=str(next(next_id)))
            for item in page.items:
                self._item(layer, item, next_id, font_id, image_ids)
            page_files.append(f"Pages/Page_{n}/Content.xml")
            files[f"Doc_0/Pages/Page_{n}/Content.xml"] = _xml(root)
        max_id = next(next_id) - 1

        pub = etree.Element(O + "Res", nsmap={"ofd": NS}, BaseLoc="Res")
        fonts = etree.SubElement(pub, O + "Fonts")
        etree.SubElement(fonts, O + "Font", ID=str(font_id), FontName=self.font_name, FamilyName=self.font_name)
        files["Doc_0/PublicRes.xml"] = _xml(pub)
        if self.images:
            res = etree.Element(O + "Res", nsmap={"ofd": NS}, BaseLoc="Res")
            mm_el = etree.SubElement(res, O + "MultiMedias")
            for i, (iid, png) in enumerate(zip(image_ids, self.images, strict=True)):
                m = etree.SubElement(mm_el, O + "MultiMedia", ID=str(iid), Type="Image", Format="PNG")
                etree.SubElement(m, O + "MediaFile").text = f"image_{i}.png"
                files[f"Doc_0/Res/image_{i}.png"] = png
            files["Doc_0/DocumentRes.xml"] = _xml(res)

        doc = etree.Element(O + "Document", nsmap={"ofd": NS})
        common = etree.SubElement(doc, O + "CommonData")
        etree.SubElement(common, O + "MaxUnitID").text = str(max_id)
        area = etree.SubElement(common, O + "PageArea")
        first = self.pages[0]
        etree.SubElement(area, O + "PhysicalBox").text = f"0 0 {_fmt(first.width)} {_fmt(first.height)}"
        etree.SubElement(common, O + "PublicRes").text = "PublicRes.xml"
        if self.images:
            etree.SubElement(common, O + "DocumentRes").text = "DocumentRes.xml"
        pages_el = etree.SubElement(doc, O + "Pages")
        for pid, loc in zip(page_ids, page_files, strict=True):
            etree.SubElement(pages_el, O + "Page", ID=str(pid), BaseLoc=loc)
        files["Doc_0/Document.xml"] = _xml(doc)

        ofd = etree.Element(O + "OFD", nsmap={"ofd": NS}, Version="1.0", DocType="OFD")
        body = etree.SubElement(ofd, O + "DocBody")
        info = etree.SubElement(body, O + "DocInfo")
        etree.SubElement(info, O + "DocID").text = uuid.uuid4().hex
        if self.title:
            etree.SubElement(info, O + "Title").text = self.title
        etree.SubElement(info, O + "Author").text = self.author
        etree.SubElement(info, O + "CreationDate").text = self.created.strftime("%Y-%m-%d")
        etree.SubElement(info, O + "Creator").text = self.creator
        etree.SubElement(info, O + "CreatorVersion").text = "1.0"
        if self.custom:
            customs = etree.SubElement(info, O + "CustomDatas")
            for k, v in self.custom.items():
                etree.SubElement(customs, O + "CustomData", Name=k).text = v
        etree.SubElement(body, O + "DocRoot").text = "Doc_0/Document.xml"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("OFD.xml", _xml(ofd))
            for name in sorted(files):
                zf.writestr(name, files[name])
        return out.getvalue()

    def _item(self, layer, item, next_id, font_id, image_ids) -> None:
        kind = item[0]
        if kind == "text":
            _k, x, y, text, size, bold, color, width = item
            w = width if width is not None else size * max(len(text), 1)
            obj = etree.SubElement(layer, O + "TextObject", ID=str(next(next_id)),
                                   Boundary=f"{_fmt(x)} {_fmt(y - size)} {_fmt(w)} {_fmt(size * 1.3)}",
                                   Font=str(font_id), Size=_fmt(size))
            if bold:
                obj.set("Weight", "700")
            etree.SubElement(obj, O + "FillColor", Value=" ".join(str(c) for c in color))
            tc = etree.SubElement(obj, O + "TextCode", X="0", Y=_fmt(size))
            if len(text) > 1:
                tc.set("DeltaX", " ".join([_fmt(size)] * (len(text) - 1)))
            tc.text = text
        elif kind == "line":
            _k, x1, y1, x2, y2, width, color = item
            left, top = min(x1, x2), min(y1, y2)
            obj = etree.SubElement(layer, O + "PathObject", ID=str(next(next_id)),
                                   Boundary=f"{_fmt(left)} {_fmt(top)} {_fmt(abs(x2 - x1) or width)} "
                                            f"{_fmt(abs(y2 - y1) or width)}", LineWidth=_fmt(width))
            etree.SubElement(obj, O + "StrokeColor", Value=" ".join(str(c) for c in color))
            etree.SubElement(obj, O + "AbbreviatedData").text = (
                f"M {_fmt(x1 - left)} {_fmt(y1 - top)} L {_fmt(x2 - left)} {_fmt(y2 - top)}")
        elif kind == "rect":
            _k, x, y, w, h, width, color = item
            obj = etree.SubElement(layer, O + "PathObject", ID=str(next(next_id)),
                                   Boundary=f"{_fmt(x)} {_fmt(y)} {_fmt(w)} {_fmt(h)}", LineWidth=_fmt(width))
            etree.SubElement(obj, O + "StrokeColor", Value=" ".join(str(c) for c in color))
            etree.SubElement(obj, O + "AbbreviatedData").text = (
                f"M 0 0 L {_fmt(w)} 0 L {_fmt(w)} {_fmt(h)} L 0 {_fmt(h)} C")
        elif kind == "image":
            _k, x, y, w, h, index = item
            etree.SubElement(layer, O + "ImageObject", ID=str(next(next_id)),
                             Boundary=f"{_fmt(x)} {_fmt(y)} {_fmt(w)} {_fmt(h)}",
                             CTM=f"{_fmt(w)} 0 0 {_fmt(h)} 0 0", ResourceID=str(image_ids[index]))


def _xml(root) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


__all__ = ["OfdBuilder"]
