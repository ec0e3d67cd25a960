"""A device in words, from its User-Agent: "Chrome · Windows", "微信 · iPhone"."""

from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l

# first match wins: the specific browsers before the engines they are built on
_BROWSERS = (
    (re.compile(r"MicroMessenger/"), _l("WeChat")),
    (re.compile(r"AlipayClient/"), _l("Alipay")),
    (re.compile(r"DingTalk/"), _l("DingTalk")),
    (re.compile(r"Edg(e|A|iOS)?/"), "Edge"),
    (re.compile(r"OPR/|Opera"), "Opera"),
    (re.compile(r"UCBrowser/"), "UC"),
    (re.compile(r"QQBrowser/"), "QQ"),
    (re.compile(r"HuaweiBrowser/"), _l("Huawei Browser")),
    (re.compile(r"MiuiBrowser/"), _l("Xiaomi Browser")),
    (re.compile(r"SamsungBrowser/"), "Samsung Internet"),
    (re.compile(r"Firefox/|FxiOS/"), "Firefox"),
    (re.compile(r"Chrome/|CriOS/|Chromium/"), "Chrome"),
    (re.compile(r"Version/[\d.]+.*Safari/"), "Safari"),
    (re.compile(r"python-requests|curl/|Go-http-client|okhttp", re.I), _l("Program")),
)
_SYSTEMS = (
    (re.compile(r"HarmonyOS|OpenHarmony"), _l("HarmonyOS")),
    (re.compile(r"iPhone"), "iPhone"),
    (re.compile(r"iPad"), "iPad"),
    (re.compile(r"Android"), "Android"),
    (re.compile(r"Windows"), "Windows"),
    (re.compile(r"Mac OS X|Macintosh"), "Mac"),
    (re.compile(r"CrOS"), "ChromeOS"),
    (re.compile(r"Linux"), "Linux"),
)


def device_label(user_agent: str | None) -> str:
    ua = user_agent or ""
    browser = next((str(name) for rx, name in _BROWSERS if rx.search(ua)), "")
    system = next((str(name) for rx, name in _SYSTEMS if rx.search(ua)), "")
    parts = [p for p in (browser, system) if p]
    return " · ".join(parts) if parts else str(_l("Unknown device"))
