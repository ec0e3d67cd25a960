"""The one QR helper: every QR code the service makes (licence PDFs and OFD, the wallet, the
scan-to-log-in page, TOTP enrolment, 好差评 links) comes from here, with the same error
correction level (M: 15 % of the code may be damaged and it still reads). The qrcode package
(which imports Pillow) is imported when a code is made, not when the app starts."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import qrcode


def _code(data: str, border: int, box_size: int = 10, image_factory=None) -> qrcode.QRCode:
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=border, box_size=box_size,
                       image_factory=image_factory)
    qr.add_data(data)
    qr.make(fit=True)
    return qr


def qr_matrix(data: str, border: int = 0) -> list[list[bool]]:
    """The modules (True: dark), row by row, with ``border`` light modules around (vector drawing)."""
    return _code(data, border).get_matrix()


def qr_svg(data: str, *, border: int = 4, box_size: int = 8, background: bool = False) -> bytes:
    """An SVG document of path elements (small, crisp at any size); ``background`` paints the
    light modules white (for pages with a coloured or dark background)."""
    import qrcode.image.svg

    factory = qrcode.image.svg.SvgPathFillImage if background else qrcode.image.svg.SvgPathImage
    buf = io.BytesIO()
    _code(data, border, box_size, factory).make_image().save(buf)
    return buf.getvalue()


def qr_data_uri(data: str, *, border: int = 4) -> str:
    """The SVG as a ``data:`` URI for an ``<img>`` (allowed by the CSP; no inline script)."""
    return "data:image/svg+xml;base64," + base64.b64encode(qr_svg(data, border=border)).decode()
