"""Screenshots for docs/screenshots: ``keep(page, "<area>-<page>")`` writes
$TONGBAN_E2E_SCREENSHOTS/<area>-<page>-<wide|phone>.png when that variable names a folder.

Kept small: the full page, phones at twice their CSS size (not the 3x of the device), at
most MAX_HEIGHT pixels tall, reduced to a 128-colour palette (text and flat colours survive)."""

from __future__ import annotations

import io
import os
from pathlib import Path

MAX_HEIGHT = 4000


def keep(page, name: str) -> None:
    folder = os.environ.get("TONGBAN_E2E_SCREENSHOTS")
    if not folder:
        return
    from PIL import Image

    width = page.evaluate("() => window.innerWidth")
    size = "phone" if width < 600 else "wide"
    im = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    scale = (2 * width) / im.width if size == "phone" else width / im.width
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    if im.height > MAX_HEIGHT:
        im = im.crop((0, 0, im.width, MAX_HEIGHT))
    im = im.quantize(colors=128, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    Path(folder).mkdir(parents=True, exist_ok=True)
    im.save(Path(folder) / f"{name}-{size}.png", optimize=True)
