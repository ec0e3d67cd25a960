"""The wallet's picture of a licence: the first page of its own sealed PDF, as a PNG.

The sealed PDF already looks like the paper licence (the national layout, the issuer's red
seal, the verification QR), so the card shown in the wallet is that page, rendered by
poppler's ``pdftoppm`` (seal.placement.page_preview) and cached per licence version and
state. A licence that is no longer valid is shown faded, with its state and date written
across it in red, so that a screenshot of the card cannot pass for a valid licence.

The cache lives in this process (a few hundred kilobytes per worker): it is recomputed from
the database on a miss, so nothing another server needs lives only here.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from tongban.fonts import CJK_FONT_PATH as FONT_PATH

WIDTH_PX = 900  # sharp on a 3x phone at 300 CSS px, small on a desktop
_KEPT = 128
_cards: OrderedDict[tuple, bytes] = OrderedDict()
_lock = threading.Lock()


def _mark_invalid(png: bytes, label: str, since: str) -> bytes:
    """The card faded, with ``label`` (and ``since``) stamped across it in red."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = ImageEnhance.Color(img).enhance(0.15)
    img = Image.blend(img, Image.new("RGB", img.size, "white"), 0.35)
    w, h = img.size
    text = f"{label}  {since}".strip()
    size = max(24, w // 12)
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    try:
        font = ImageFont.truetype(FONT_PATH, size)
    except OSError:  # the font package missing: still marked, in the default font
        font = ImageFont.load_default(size)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left, bottom - top
    stamp = Image.new("RGBA", (int(tw + size), int(th + size)), (0, 0, 0, 0))
    sd = ImageDraw.Draw(stamp)
    sd.rounded_rectangle((2, 2, stamp.width - 3, stamp.height - 3), radius=size // 4,
                         outline=(200, 16, 46, 235), width=max(3, size // 10))
    sd.text((size // 2 - left, size // 2 - top), text, font=font, fill=(200, 16, 46, 235))
    stamp = stamp.rotate(18, expand=True, resample=Image.Resampling.BICUBIC)
    layer.alpha_composite(stamp, ((w - stamp.width) // 2, (h - stamp.height) // 2))
    out = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def card_png(lic, state: dict) -> bytes:
    """The licence's card picture (PNG), marked when ``state`` (display.wallet_state) is not valid."""
    from seal.placement import page_preview

    key = (lic.identifier, lic.version, bool(state["valid"]), state.get("label", ""), state.get("since", ""))
    with _lock:
        hit = _cards.get(key)
        if hit is not None:
            _cards.move_to_end(key)
            return hit
    png = page_preview(lic.pdf, 0, WIDTH_PX)
    if not state["valid"]:
        png = _mark_invalid(png, state.get("label", ""), state.get("since", ""))
    with _lock:
        _cards[key] = png
        while len(_cards) > _KEPT:
            _cards.popitem(last=False)
    return png
