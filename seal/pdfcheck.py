"""Reading untrusted PDFs without being led astray: bounded walks of the object graph.

Every PDF path (sealing at the API, the console and the CLI; verifying) runs ``check_structure``
before pyHanko works on a document, so that a loop, an endless nesting or an absurd number is a
400 ``invalid_pdf`` instead of a hang or a 500; pyHanko's own errors on what it reads later are
``DOCUMENT_ERRORS``, also 400.
"""

from __future__ import annotations

import functools
import math

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfError

from tongban.errors import TongbanError

from .errors import BadPdf

# Bounds on every walk of a document's object graph. An attacker's PDF may loop (a Pages node
# that is its own /Parent, circular /Kids), nest without end or claim absurd counts; each walk
# below keeps a set of the objects seen and stops at these limits.
MAX_TREE_DEPTH = 64  # page tree and field tree levels, /Parent links followed
MAX_PAGES = 100_000
MAX_FIELDS = 10_000  # form fields walked in the /AcroForm tree
MAX_COORDINATE = 1_000_000.0  # points: ISO 32000 allows 14,400 in at user unit 1 (~1e6 pt)

# What pyHanko raises on a document it cannot make sense of (rather than a defect of ours or a
# signer failing): the PDF is damaged, 400 ``invalid_pdf``. The XMP parser's errors are
# ValueErrors, as are pyHanko's validation errors.
DOCUMENT_ERRORS = (PdfError, ValueError, TypeError, KeyError, IndexError, AttributeError, AssertionError,
                   RecursionError, ArithmeticError, UnicodeError)


class _Bad(Exception):
    """A structural defect found by the checks below (turned into BadPdf by ``check_structure``)."""


def _ref_key(obj) -> tuple | None:
    return (obj.idnum, obj.generation) if isinstance(obj, generic.IndirectObject) else None


def _value(obj):
    """The object itself: an indirect reference resolved (one level, as every PDF value may be one)."""
    return obj.get_object() if isinstance(obj, generic.IndirectObject) else obj


def _as_dict(obj, what: str):
    obj = obj.get_object() if isinstance(obj, generic.IndirectObject) else obj
    if not isinstance(obj, generic.DictionaryObject):
        raise _Bad(f"{what} is not a dictionary")
    return obj


def _as_int(obj, what: str, low: int, high: int) -> int:
    obj = obj.get_object() if isinstance(obj, generic.IndirectObject) else obj
    if isinstance(obj, bool) or not isinstance(obj, int) or not low <= int(obj) <= high:
        raise _Bad(f"{what} is not a whole number from {low} to {high}")
    return int(obj)


def _box(value, what: str) -> tuple[float, float, float, float]:
    """A rectangle as (x1, y1, x2, y2) normalised, or _Bad: four finite numbers of sane size."""
    value = value.get_object() if isinstance(value, generic.IndirectObject) else value
    if not isinstance(value, generic.ArrayObject) or len(value) != 4:
        raise _Bad(f"{what} is not an array of four numbers")
    nums = []
    for v in value:
        v = v.get_object() if isinstance(v, generic.IndirectObject) else v
        if isinstance(v, bool) or not isinstance(v, int | float | generic.FloatObject):
            raise _Bad(f"{what} holds something other than a number")
        try:
            f = float(v)
        except (OverflowError, ValueError, ArithmeticError):
            raise _Bad(f"{what} holds a number out of range") from None
        if not math.isfinite(f) or abs(f) > MAX_COORDINATE:
            raise _Bad(f"{what} holds a number out of range")
        nums.append(f)
    x1, y1, x2, y2 = nums
    if x1 == x2 or y1 == y2:
        raise _Bad(f"{what} is empty")
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _check_page_tree(root) -> int:
    """Walk the whole page tree (bounded): every node a dictionary reached once, /Kids arrays of
    references, whole-number /Count, boxes of four finite numbers; the pages found match /Count."""
    if "/Pages" not in root:
        raise _Bad("the catalogue has no /Pages")
    top_ref = root.raw_get("/Pages")
    if not isinstance(top_ref, generic.IndirectObject):
        raise _Bad("/Pages is not a reference")
    declared = _as_int(_as_dict(top_ref, "/Pages").get("/Count"), "/Pages /Count", 1, MAX_PAGES)
    seen: set = set()
    found = 0
    stack: list[tuple[generic.IndirectObject, tuple | None, int]] = [(top_ref, None, 0)]
    while stack:
        ref, parent_key, depth = stack.pop()
        key = _ref_key(ref)
        if key in seen:
            raise _Bad("the page tree has a cycle or a node reached twice")
        seen.add(key)
        if depth > MAX_TREE_DEPTH or len(seen) > MAX_PAGES + MAX_TREE_DEPTH * 64:
            raise _Bad("the page tree is too deep or too large")
        node = _as_dict(ref, "a page tree node")
        # /Parent must lead back up the way we came (the root has none): what inherits boxes
        # and resources follows it, and a node that is its own parent loops
        if "/Parent" in node and (parent_key is None or _ref_key(node.raw_get("/Parent")) != parent_key):
            raise _Bad("a page tree node's /Parent is not the node that lists it")
        for name in ("/MediaBox", "/CropBox"):
            if name in node:
                _box(node[name], name)
        kind = _value(node.get("/Type"))
        if kind == "/Pages":
            _as_int(node.get("/Count"), "/Count", 0, MAX_PAGES)
            kids = _value(node.get("/Kids"))
            if not isinstance(kids, generic.ArrayObject):
                raise _Bad("a /Pages node has no /Kids array")
            for kid in reversed(kids):
                if not isinstance(kid, generic.IndirectObject):
                    raise _Bad("a page tree child is not a reference")
                stack.append((kid, key, depth + 1))
        elif kind == "/Page":
            found += 1
            if found > MAX_PAGES:
                raise _Bad("too many pages")
        else:
            raise _Bad("a page tree node is neither /Pages nor /Page")
    if found != declared:
        raise _Bad(f"/Count says {declared} pages, the page tree has {found}")
    return found


def _check_fields(root) -> int:
    """Walk the form's field tree (bounded); the number of signature fields with a value."""
    if "/AcroForm" not in root:
        return 0
    form = _as_dict(root["/AcroForm"], "/AcroForm")
    fields = _value(form.get("/Fields"))
    if fields is None:
        return 0
    if not isinstance(fields, generic.ArrayObject):
        raise _Bad("/AcroForm /Fields is not an array")
    seen: set = set()
    signed = 0
    stack = [(f, None, 0) for f in reversed(fields)]
    while stack:
        ref, inherited_type, depth = stack.pop()
        key = _ref_key(ref)
        if key is not None:
            if key in seen:
                raise _Bad("the form's field tree has a cycle or a field reached twice")
            seen.add(key)
        if depth > MAX_TREE_DEPTH or len(seen) > MAX_FIELDS:
            raise _Bad("the form's field tree is too deep or too large")
        field = _as_dict(ref, "a form field")
        field_type = _value(field.get("/FT")) or inherited_type  # /FT is inheritable
        if field_type == "/Sig" and field.get("/V") is not None:  # the value itself is not parsed
            signed += 1
        kids = _value(field.get("/Kids"))
        if kids is not None:
            if not isinstance(kids, generic.ArrayObject):
                raise _Bad("a form field's /Kids is not an array")
            stack.extend((k, field_type, depth + 1) for k in reversed(kids))
    return signed


def _check_docmdp(root) -> None:
    """A certification's permissions (/Perms /DocMDP) must be readable: /P is 1, 2 or 3."""
    if "/Perms" not in root:
        return
    perms = _as_dict(root["/Perms"], "/Perms")
    if "/DocMDP" not in perms:
        return
    refs = _value(_as_dict(perms["/DocMDP"], "the certification signature").get("/Reference"))
    if refs is None:
        return
    if not isinstance(refs, generic.ArrayObject) or len(refs) > 16:
        raise _Bad("the certification's /Reference is not an array")
    for ref in refs:
        params = _as_dict(ref, "a signature reference").get("/TransformParams")
        if params is not None and "/P" in _as_dict(params, "/TransformParams"):
            _as_int(params.get_object()["/P"], "the certification's /P", 1, 3)


def check_structure(handler) -> dict:
    """The checks every PDF path runs before pyHanko works on a document (bounded walks of the
    page tree, the form fields and the certification); BadPdf when one fails.

    Returns ``{"pages": n, "signatures": n}`` (signature fields with a value).
    """
    try:
        root = _as_dict(handler.root, "the catalogue")
        pages = _check_page_tree(root)
        signatures = _check_fields(root)
        _check_docmdp(root)
    except _Bad as e:
        raise damaged(e) from None
    except TongbanError:
        raise
    except DOCUMENT_ERRORS as e:
        raise damaged(e) from None
    return {"pages": pages, "signatures": signatures}


def visible_box(handler, page_ix: int, count: int) -> tuple[float, float, float, float]:
    """Page ``page_ix``'s visible box (CropBox, else MediaBox, inherited along at most
    MAX_TREE_DEPTH /Parent links), normalised x1 < x2, y1 < y2; A4 when none is given.
    ``count`` is the page count from ``check_structure``, which must have passed."""
    try:
        node = handler.find_page_for_modification(page_ix % count)[0].get_object()
        seen: set[int] = set()
        for _link in range(MAX_TREE_DEPTH + 1):
            if not isinstance(node, generic.DictionaryObject) or id(node) in seen:
                break
            seen.add(id(node))
            for name in ("/CropBox", "/MediaBox"):
                if name in node:
                    return _box(node[name], name)
            parent = node.get("/Parent")
            node = parent.get_object() if isinstance(parent, generic.IndirectObject) else parent
    except _Bad as e:
        raise damaged(e) from None
    except TongbanError:
        raise
    except DOCUMENT_ERRORS as e:
        raise damaged(e) from None
    return 0.0, 0.0, 595.0, 842.0


@functools.cache
def decode_limits():
    """pyHanko's limits for untrusted input (per stream: ratio, size, per purpose), with a smaller
    budget for the whole document: sealing and verifying decode little beyond object and
    cross-reference streams, so max(64 MiB, 20 x the file) instead of max(256 MiB, 100 x)."""
    from pyhanko.pdf_utils.decode_limits import DecodeLimits, DocumentDecodeBudget

    return DecodeLimits(document_budget=DocumentDecodeBudget(base_allowance=64 * 1024 * 1024, max_ratio=20))


def sane_box(box) -> bool:
    """Four finite numbers within the page-size limit, x1 < x2 and y1 < y2 (NaN fails every test)."""
    return len(box) == 4 and all(-MAX_COORDINATE <= float(v) <= MAX_COORDINATE for v in box) \
        and box[0] < box[2] and box[1] < box[3]


def damaged(e: BaseException) -> BadPdf:
    """The BadPdf for one of DOCUMENT_ERRORS (or a structural defect) met while reading a document."""
    return BadPdf(f"damaged PDF: {str(e)[:200] or type(e).__name__}")
