"""A corpus of malformed but parseable PDFs, as raw bytes (each is one defect of a good document)."""

from __future__ import annotations

import zlib


def raw_pdf(objects: dict[int, bytes], root: bytes = b"1 0 R", trailer_extra: bytes = b"") -> bytes:
    """A PDF of the given objects (number -> body) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    size = max(objects) + 1
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for i in range(1, size):
        out += (b"%010d 00000 n \n" % offsets[i]) if i in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root %s %s>>\nstartxref\n%d\n%%%%EOF\n" % (size, root, trailer_extra, xref)
    return bytes(out)

CAT = b"<< /Type /Catalog /Pages 2 0 R >>"
_BOMB = zlib.compress(b"<x:xmpmeta>" + b" " * (40 * 1024 * 1024), 9)  # 40 MiB from ~40 KiB
PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"
def doc(cat: bytes = CAT, pages: bytes = PAGES, page: bytes = PAGE, objs: dict | None = None) -> bytes:
    """A one-page document (catalogue 1, pages 2, page 3) with one part replaced or objects added."""
    return raw_pdf({1: cat, 2: pages, 3: page, **(objs or {})})


GOOD = doc()

# name -> a document with one defect; every PDF path answers 400 invalid_pdf (or 409 for the
# certification that forbids changes, SIGN_REFUSED), never 500, never hangs
CORPUS = {
    "self_parent_pages": doc(pages=b"<< /Type /Pages /Kids [3 0 R] /Count 1 /Parent 2 0 R >>",
                             page=b"<< /Type /Page /Parent 2 0 R >>"),
    "no_pages": doc(cat=b"<< /Type /Catalog >>"),
    "pages_not_dict": doc(cat=b"<< /Type /Catalog /Pages 5 >>"),
    "no_kids": doc(pages=b"<< /Type /Pages /Count 1 >>"),
    "count_string": doc(pages=b"<< /Type /Pages /Kids [3 0 R] /Count (one) >>"),
    "count_huge": doc(pages=b"<< /Type /Pages /Kids [3 0 R] /Count 1000000000 >>"),
    "count_negative": doc(pages=b"<< /Type /Pages /Kids [3 0 R] /Count -3 >>"),
    "mediabox_3": doc(page=b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595] >>"),
    "mediabox_inf": doc(page=b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 1e999 1e999] >>"),
    "mediabox_bigint": doc(page=b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 1" + b"0" * 400 + b" 842] >>"),
    "mediabox_huge_real": doc(page=b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 99999999999999999999.5 842] >>"),
    "mediabox_empty": doc(page=b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 0 0] >>"),
    "inherited_box_loop": doc(pages=b"<< /Type /Pages /Kids [3 0 R] /Count 1 /MediaBox [0 0 595] >>",
                              page=b"<< /Type /Page /Parent 2 0 R >>"),
    "page_parent_elsewhere": doc(page=b"<< /Type /Page /Parent 3 0 R >>"),
    "kids_not_array": doc(pages=b"<< /Type /Pages /Kids 3 0 R /Count 1 >>"),
    "mediabox_str": doc(page=b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 (a) 842] >>"),
    "acroform_int": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /AcroForm 5 >>"),
    "acroform_fields_int": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields 7 >> >>"),
    "circular_kids": doc(pages=b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"),
    "circular_kids2": doc(pages=b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
                          objs={4: b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>"}),
    "kid_not_ref": doc(pages=b"<< /Type /Pages /Kids [<< /Type /Page >>] /Count 1 >>"),
    "page_no_type": doc(page=b"<< /Parent 2 0 R /MediaBox [0 0 595 842] >>"),
    "broken_xmp": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /Metadata 4 0 R >>",
                      objs={4: b"<< /Type /Metadata /Subtype /XML /Length 20 >>\nstream\n"
                               b"<x:xmpmeta <<<<>>>>\nendstream"}),
    "xmp_bomb": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /Metadata 4 0 R >>",
                    objs={4: b"<< /Type /Metadata /Subtype /XML /Filter /FlateDecode /Length %d >>\nstream\n%s"
                             b"\nendstream" % (len(_BOMB), _BOMB)}),
    "docmdp_p_str": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /Perms << /DocMDP 4 0 R >> >>",
                        objs={4: b"<< /Type /Sig /Filter /Adobe.PPKLite /SubFilter /ETSI.CAdES.detached "
                                 b"/Reference [<< /Type /SigRef /TransformMethod /DocMDP /TransformParams "
                                 b"<< /Type /TransformParams /P (x) /V /1.2 >> >>] >>"}),
    "docmdp_p1": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /Perms << /DocMDP 4 0 R >> >>",
                     objs={4: b"<< /Type /Sig /Filter /Adobe.PPKLite /SubFilter /ETSI.CAdES.detached "
                              b"/Reference [<< /Type /SigRef /TransformMethod /DocMDP /TransformParams "
                              b"<< /Type /TransformParams /P 1 /V /1.2 >> >>] >>"}),
    "deep_array": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /Foo " + b"[" * 5000 + b"]" * 5000 + b" >>"),
    "deep_array_page": doc(page=b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Annots "
                               + b"[" * 5000 + b"]" * 5000 + b" >>"),
    "deep_dict": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /Foo " + b"<< /A " * 3000 + b"1" + b" >>" * 3000 + b" >>"),
    "root_not_dict": raw_pdf({1: b"42", 2: PAGES, 3: PAGE}),
    "unclosed_deep": doc(cat=b"<< /Type /Catalog /Pages 2 0 R /Foo " + b"[" * 5000 + b" >>"),
}
SIGN_REFUSED = {"docmdp_p1"}  # 409: a certification that allows no changes
# verification never reads the XMP metadata, and a certification without signature is no seal
VERIFY_NO_SEAL = {"broken_xmp", "xmp_bomb", "docmdp_p1"}
