"""The one CJK font registration for reportlab: WenQuanYi Micro Hei (Debian's
``fonts-wqy-microhei``), embedded as a subset in every PDF the service draws (licences,
seal pictures, previews). reportlab is imported, and the font file read, when something is
drawn: not when the app starts."""

from __future__ import annotations

import threading

CJK_FONT = "WenQuanYiMicroHei"
CJK_FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"

_lock = threading.Lock()


def cjk_font() -> str:
    """The registered font's name (registered once per process, thread-safe)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    with _lock:
        if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(CJK_FONT, CJK_FONT_PATH, subfontIndex=0))
    return CJK_FONT
