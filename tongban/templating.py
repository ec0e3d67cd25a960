"""What every rendered page pays for, paid less often: the same HTML, byte for byte.

- The templates' ``_('...')``: Jinja's newstyle gettext looks the message up, wraps it in
  ``Markup`` and formats it with the (escaped) variables on every call; a page asks for some
  thirty constant messages. A message asked for without variables is the same ``Markup`` for a
  given catalogue, so it is kept on the catalogue (a catalogue is one object per locale and
  domain for the life of the process; a replaced catalogue starts with nothing kept). Messages
  with variables, ``ngettext`` and ``pgettext`` are formatted per call, as before.
- The templates' ``url_for`` of an endpoint without values (or a static file): the same URL
  for every request with the same script root, host and scheme (the URL map is fixed once the
  app serves), so it is kept per those; with any ``url_defaults`` function registered, or any
  other value (``next=``...), it is built per call, as before.
- WTForms' ``html_params`` (every input, button and label of a form): the same attributes,
  escaped the same way, without ``Markup.format``'s escaping formatter for each one.
  tests/tongban/test_templating.py compares both with the originals.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import wtforms.widgets
import wtforms.widgets.core
from flask import Flask
from flask.globals import _cv_request
from jinja2 import pass_context
from markupsafe import Markup, escape

# WTForms' own, for tests/tongban/test_templating.py to compare with (taken before any patch)
WTFORMS_HTML_PARAMS = wtforms.widgets.core.html_params

# messages kept per catalogue: the templates' literal msgids (a few hundred); a template passing
# a variable as the msgid cannot grow it past this
_KEPT_MAX = 4096
_KEPT_ATTR = "_tongban_template_markup"


def make_gettext(translations):
    """The templates' ``gettext`` (and ``_``), as ``jinja2.ext._make_new_gettext`` makes it
    around ``lambda s: translations().ugettext(s)``, keeping the answers without variables."""

    @pass_context
    def gettext(__context, __string: str, **variables: Any) -> str:
        catalogue = translations()
        autoescape = __context.eval_ctx.autoescape
        if variables:
            rv = catalogue.ugettext(__string)
            # the translation is ours (the catalogue), as in Jinja's own newstyle gettext
            return (Markup(rv) if autoescape else rv) % variables  # noqa: S704
        kept = getattr(catalogue, _KEPT_ATTR, None)
        if kept is None:
            kept = {}
            with suppress(AttributeError):  # a catalogue without a __dict__: asked every time
                setattr(catalogue, _KEPT_ATTR, kept)
        key = (__string, autoescape)
        found = kept.get(key)
        if found is None:
            rv = catalogue.ugettext(__string)
            found = (Markup(rv) if autoescape else rv) % variables  # noqa: S704  # "%%" is "%", as before
            if len(kept) < _KEPT_MAX and type(__string) is str:
                kept[key] = found
        return found

    return gettext


_URLS_MAX = 1024


def make_url_for(app: Flask):
    """The templates' ``url_for``: ``app.url_for``, its answer kept for an endpoint asked with
    no values, or for ``static`` with only ``filename``, per request adapter (script root,
    server name, subdomain, scheme: what ``MapAdapter.build`` reads besides the URL map)."""
    build = app.url_for
    kept: dict[tuple, str] = {}

    def url_for(endpoint: str, /, **values: Any) -> str:
        if (not values or (endpoint == "static" and len(values) == 1 and type(values.get("filename")) is str)) \
                and endpoint[:1] != "." and not any(app.url_default_functions.values()):
            ctx = _cv_request.get(None)
            adapter = ctx.url_adapter if ctx is not None else None
            if adapter is not None:
                key = (endpoint, values.get("filename"), adapter.script_name, adapter.server_name,
                       adapter.subdomain, adapter.url_scheme)
                found = kept.get(key)
                if found is None:
                    found = build(endpoint, **values)
                    if len(kept) < _URLS_MAX:
                        kept[key] = found
                return found
        return build(endpoint, **values)

    return url_for


def html_params(**kwargs: Any) -> Markup:
    """``wtforms.widgets.core.html_params``: ``k="v"`` sorted by key, ``True`` a bare name,
    ``False`` left out, the key escaped and the value escaped with ``"`` as ``&quot;`` (for a
    value that is already markup); what ``Markup('{k}="{v}"').format`` and ``Markup(" ").join``
    produce, without them."""
    params = []
    for k, v in sorted(kwargs.items()):
        k = k.rstrip("_")  # wtforms.widgets.core.clean_key
        if k.startswith(("data_", "aria_")):
            k = k.replace("_", "-")
        if v is True:
            params.append(str(escape(k)))
        elif v is False:
            continue
        else:
            value = str(escape(v))
            if '"' in value:  # only markup can still hold one: escape() writes &#34;
                value = value.replace('"', "&quot;")
            params.append(f'{escape(k)}="{value}"')
    return Markup(" ".join(params))  # noqa: S704  # every key and value escaped above


def init_app(app: Flask) -> None:
    """After ``i18n.init_app`` (which installs the templates' translation callables)."""
    from . import i18n

    gettext = make_gettext(i18n.translations)
    # both names: "_" would otherwise resolve "gettext" (jinja2.ext._gettext_alias) on every call
    app.jinja_env.globals["gettext"] = app.jinja_env.globals["_"] = gettext
    app.jinja_env.globals["url_for"] = make_url_for(app)
    core = wtforms.widgets.core
    # WTForms 3.x: the widgets call the module's function; Input and Button hold it as a
    # staticmethod; Label calls wtforms.widgets.html_params
    core.html_params = html_params  # type: ignore[assignment]
    wtforms.widgets.html_params = html_params  # type: ignore[assignment]
    core.Input.html_params = staticmethod(html_params)  # type: ignore[assignment]
    core.Button.html_params = staticmethod(html_params)  # type: ignore[assignment]
