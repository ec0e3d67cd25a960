"""Chinese first (zh_CN), English on request: ?lang=, the ``lang`` cookie, then Accept-Language."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, has_request_context, redirect, request
from flask.globals import _cv_app
from flask_babel import force_locale, get_locale, get_translations
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from .config import PROJECT_ROOT
from .extensions import babel

bp = Blueprint("i18n", __name__)


def select_locale() -> str:
    langs = current_app.config["LANGUAGES"]
    ui_locales = g.get("ui_locales") or request.args.get("ui_locales")  # OIDC: preferred, in order
    for candidate in (request.args.get("lang"), *_from_ui_locales(ui_locales), request.cookies.get("lang")):
        if candidate in langs:
            return candidate
    return _from_accept_language(request.headers.get("Accept-Language", ""))


# The locale an Accept-Language header asks for, by the header's text: browsers send a handful
# of distinct values, and parsing one (werkzeug's LanguageAccept, then best_match) is most of
# what choosing the locale costs a request. Bounded: a header is whatever a client sends.
_by_accept_language: dict[str, str] = {}
_BY_ACCEPT_LANGUAGE_MAX = 1024


def _from_accept_language(header: str) -> str:
    found = _by_accept_language.get(header)
    if found is None:
        best = parse_accept_header(header, LanguageAccept).best_match(["zh_CN", "zh", "en"], default="zh_CN")
        found = "en" if best == "en" else "zh_CN"
        if len(_by_accept_language) < _BY_ACCEPT_LANGUAGE_MAX and len(header) <= 256:
            _by_accept_language[header] = found
    return found


def _from_ui_locales(value: str | None) -> list[str]:
    """BCP 47 tags (``en zh-CN``) as this app's locale names, unknown ones dropped."""
    out = []
    for tag in (value or "").split()[:10]:
        t = tag.lower()
        if t == "zh" or t.startswith(("zh-cn", "zh-hans")):
            out.append("zh_CN")
        elif t == "en" or t.startswith("en-"):
            out.append("en")
    return out


def localised(message) -> str:
    """A lazy message as text at raise time: in the request's language on a page; in English
    (the msgid) outside a request, e.g. the CLI, which is for operators and has no locale."""
    if has_request_context():
        return str(message)
    with force_locale("en"):
        return str(message)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site relative paths: never an open redirect."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


@bp.route("/lang/<code>")
def switch(code: str):
    resp = redirect(safe_next(request.args.get("next")))
    if code in current_app.config["LANGUAGES"]:
        resp.set_cookie("lang", code, max_age=365 * 86400, samesite="Lax", httponly=True,
                        secure=current_app.config.get("SESSION_COOKIE_SECURE", False))
    return resp


# WTForms' own messages ("This field is required.") in the request's language. Flask-WTF loads
# and parses WTForms' .mo file from disk once per request that builds a form (every field
# without a label asks for one); the file never changes while the process runs, so it is
# loaded once per locale and shared (a loaded catalogue is only read).
_wtforms_catalogues: dict[str, object] = {}
_wtforms_lock = threading.Lock()


def _wtforms_translations():
    """What ``flask_wtf.i18n._get_translations`` returns, from a per-process cache."""
    from flask import request as req

    if not req or "babel" not in current_app.extensions:
        return None
    locale = str(get_locale())
    found = _wtforms_catalogues.get(locale)
    if found is None:
        from babel import support
        from wtforms.i18n import messages_path

        with _wtforms_lock:
            found = _wtforms_catalogues.get(locale)
            if found is None:
                found = _wtforms_catalogues[locale] = support.Translations.load(
                    messages_path(), [locale], domain="wtforms")
    return found


def translations():
    """What ``flask_babel.get_translations()`` returns, remembered for the request: a page asks
    for it once per translated string (a dozen context look-ups each time). The remembered
    catalogue is used only while the request's locale and domain are the very objects it was
    found for: ``flask_babel.refresh()`` and ``force_locale`` replace them, and the next string
    looks it up again."""
    ctx = _cv_app.get(None)
    if ctx is None:
        return get_translations()
    ns = ctx.g.__dict__.get("_flask_babel")
    if ns is not None:
        seen = ns.__dict__
        held = seen.get("_tongban_translations")
        if held is not None and held[0] is seen.get("babel_locale") and held[1] is seen.get("babel_domain"):
            return held[2]
    found = get_translations()
    ns = ctx.g.__dict__.get("_flask_babel")
    if ns is not None:
        seen = ns.__dict__
        locale, domain = seen.get("babel_locale"), seen.get("babel_domain")
        if locale is not None and domain is not None:
            seen["_tongban_translations"] = (locale, domain, found)
    return found


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(PROJECT_ROOT / "translations"))
    babel.init_app(app, locale_selector=select_locale)
    # the templates' _() and ngettext through the remembered catalogue (same strings, same
    # formatting: Jinja's newstyle gettext escapes and fills in the variables itself)
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda s: translations().ugettext(s),
        ngettext=lambda s, p, n: translations().ungettext(s, p, n),
        newstyle=True,
        pgettext=lambda c, s: translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: translations().unpgettext(c, s, p, n),
    )
    import flask_wtf.i18n

    flask_wtf.i18n._get_translations = _wtforms_translations  # Flask-WTF 1.3: the lookup its forms use
    app.register_blueprint(bp)

    @app.context_processor
    def _lang():
        loc = str(get_locale() or "zh_CN")
        return {"current_lang": loc, "html_lang": "zh-CN" if loc.startswith("zh") else "en"}
