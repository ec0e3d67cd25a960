"""What every rendered page pays for, paid less often: the same HTML, byte for byte.

- The templates' ``_('...')``: Jinja's newstyle gettext looks the message up, wraps it in
  ``Markup`` and formats it with the (escaped) variables on every call; a page asks for some
  thirty constant messages. A message asked for without variables is the same ``Markup`` for a
  given catalogue, so it is kept on the catalogue (a catalogue is one object per locale and
  domain for the life of the process; a replaced catalogue starts with nothing kept). Messages
  with variables, ``ngettext`` and ``pgettext`` are formatted per call, as before.
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
    # "_" resolves "gettext" (jinja2.ext._gettext_alias), so both are this one
    app.jinja_env.globals["gettext"] = gettext
    core = wtforms.widgets.core
    # WTForms 3.x: the widgets call the module's function; Input and Button hold it as a
    # staticmethod; Label calls wtforms.widgets.html_params
    core.html_params = html_params  # type: ignore[assignment]
    wtforms.widgets.html_params = html_params  # type: ignore[assignment]
    core.Input.html_params = staticmethod(html_params)  # type: ignore[assignment]
    core.Button.html_params = staticmethod(html_params)  # type: ignore[assignment]
