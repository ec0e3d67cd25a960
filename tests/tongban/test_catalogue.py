"""Every package's user-facing strings reach the catalogue, and every one has its Chinese: a
package missing from babel.cfg shows English on the Chinese pages (people/ once did: form labels,
errors and text messages)."""

from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_that_translates_is_extracted():
    cfg = (ROOT / "babel.cfg").read_text()
    for pkg in sorted(p.parent for p in ROOT.glob("*/__init__.py")):
        if pkg.name in ("tests", "bench"):
            continue
        if any("flask_babel" in f.read_text(errors="replace") for f in pkg.rglob("*.py")):
            assert f"[python: {pkg.name}/**.py]" in cfg, f"babel.cfg misses {pkg.name}/"


def test_every_msgid_has_its_chinese():
    with (ROOT / "translations/zh_Hans_CN/LC_MESSAGES/messages.po").open("rb") as f:
        catalogue = read_po(f)
    assert [m.id for m in catalogue if m.id and not m.string] == []
