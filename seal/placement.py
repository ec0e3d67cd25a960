"""Where the seal goes on a page, as Chinese practice puts it: over the issuer's name and date.

Two ways for a seal officer: a named anchor text (``find_anchor``: the last place on the page
where the text stands, e.g. the organisation's name above the date — the seal is centred on it),
or a point picked by dragging the seal on a preview of the page (``page_preview``; the point is
sent as fractions of the page's width and height from its top-left corner, ``box_at``).

Text positions and previews come from poppler (``pdftotext -bbox``, ``pdftoppm``), run on a
document that has already passed ``services.read_pdf`` (the structure checks), with a timeout,
in a temporary directory: no outside input reaches a command line except as a file.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile

from tongban.errors import TongbanError

from .services import SEAL_SIZE_PT

_WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', re.S)
_PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">')
_TIMEOUT = 30


def _poppler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise TongbanError(f"{tool} (poppler-utils) is not installed", "renderer_missing", 503)
    return path


def _run(args: list[str], pdf: bytes, out_name: str | None = None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="tongban-place-") as tmp:
        src = os.path.join(tmp, "in.pdf")
        with open(src, "wb") as f:
            f.write(pdf)
        out = os.path.join(tmp, out_name or "out")
        try:
            # our own temporary paths and integers only on the command line
            subprocess.run([*args, src, out], check=True, capture_output=True, timeout=_TIMEOUT)  # noqa: S603
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            raise TongbanError("the page could not be read", "invalid_pdf", 400) from None
        path = out if os.path.exists(out) else out + ".png"
        with open(path, "rb") as f:
            return f.read()


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text)


def find_anchor(pdf: bytes, page_ix: int, anchor: str,
                box: tuple[float, float, float, float]) -> tuple[float, float] | None:
    """The centre (PDF points) of the seal over the last occurrence of ``anchor`` on the page, or None.

    Words on one line are joined without spaces (Chinese text may be set in pieces), and a
    match inside a word is located in proportion to its characters. When a date stands on one
    of the two lines below (落款日期), the seal is centred between the name and the date.
    """
    needle = _normal(anchor)
    if not needle:
        return None
    n = str(page_ix + 1)
    raw = _run([_poppler("pdftotext"), "-q", "-cropbox", "-bbox", "-f", n, "-l", n], pdf, "out.html")
    text = raw.decode("utf-8", "replace")
    lines: dict[int, list[tuple[float, float, float, float, str]]] = {}
    for m in _WORD.finditer(text):
        x1, y1, x2, y2 = (float(m.group(i)) for i in range(1, 5))
        word = _normal(html.unescape(m.group(5)))
        if word:
            lines.setdefault(round((y1 + y2) / 2 / 3), []).append((x1, y1, x2, y2, word))
    best, rows = None, []
    for key in sorted(lines):
        words = sorted(lines[key])
        # (x1, x2, y1, y2) of each character, in proportion within its word
        chars: list[tuple[float, float, float, float]] = []
        joined = ""
        for x1, y1, x2, y2, word in words:
            step = (x2 - x1) / len(word)
            chars.extend((x1 + i * step, x1 + (i + 1) * step, y1, y2) for i in range(len(word)))
            joined += word
        rows.append((joined, chars))
    for index, (joined, chars) in enumerate(rows):
        at = joined.rfind(needle)
        if at >= 0:
            best = (index, chars[at:at + len(needle)])
    if best is None:
        return None
    index, span = best
    cx, cy = _centre(span)
    height = max(c[3] for c in span) - min(c[2] for c in span)
    # 骑年盖月: with a date just below the name, the seal sits between the two, over the date too
    for joined, chars in rows[index + 1:index + 3]:
        m = _DATE.search(joined)
        if m and _centre(chars)[1] - cy <= 3 * height:
            dx, dy = _centre(chars[m.start():m.end()])
            cx, cy = (cx + dx) / 2, (cy + dy) / 2
            break
    left, _bottom, _right, top = box
    return left + cx, top - cy  # pdftotext measures from the top-left corner


_DATE = re.compile(r"\d{4}\s*年\s*\d{1,2}\s*月(\s*\d{1,2}\s*日)?|\d{4}[-./]\d{1,2}[-./]\d{1,2}"
                   r"|[〇零一二三四五六七八九]{4}年")


def _centre(span) -> tuple[float, float]:
    return (span[0][0] + span[-1][1]) / 2, (min(c[2] for c in span) + max(c[3] for c in span)) / 2


def box_at(box: tuple[float, float, float, float], cx: float, cy: float) -> tuple[float, float, float, float]:
    """A seal-sized box centred on (cx, cy), moved inside the page if it would stick out."""
    x1, y1, x2, y2 = box
    size = SEAL_SIZE_PT
    left = min(max(cx - size / 2, x1), x2 - size)
    bottom = min(max(cy - size / 2, y1), y2 - size)
    return left, bottom, left + size, bottom + size


def point_at(box: tuple[float, float, float, float], fx: float, fy: float) -> tuple[float, float]:
    """Fractions of the page's width and height from its top-left corner, as PDF points."""
    x1, y1, x2, y2 = box
    fx, fy = min(max(fx, 0.0), 1.0), min(max(fy, 0.0), 1.0)
    return x1 + fx * (x2 - x1), y2 - fy * (y2 - y1)


def page_preview(pdf: bytes, page_ix: int, width_px: int = 700) -> bytes:
    """The page as a PNG ``width_px`` wide (its crop box), for dragging the seal into place."""
    n = str(page_ix + 1)
    return _run([_poppler("pdftoppm"), "-q", "-png", "-cropbox", "-singlefile", "-f", n, "-l", n,
                 "-scale-to-x", str(width_px), "-scale-to-y", "-1"], pdf, "page")


def page_size_ratio(box: tuple[float, float, float, float]) -> float:
    x1, y1, x2, y2 = box
    return (y2 - y1) / (x2 - x1) if x2 > x1 else 1.0


__all__ = ["box_at", "find_anchor", "page_preview", "point_at"]
