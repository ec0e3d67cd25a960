"""tongban.templating: the templates' kept gettext and the faster WTForms ``html_params`` write
exactly what Jinja's and WTForms' own did (the log-in page, byte for byte, in both languages)."""

from __future__ import annotations

import pytest
from flask_babel import lazy_gettext
from jinja2.ext import _make_new_gettext
from markupsafe import Markup


def _cases():
    return [
        {},
        {"name": "login", "id": "login", "value": "", "type": "text"},
        {"class_": "btn", "for_": "x", "data_user_name": "a_b", "aria_described_by": "h", "data": "d"},
        {"checked": True, "readonly": False, "required": True, "value": None, "maxlength": 32},
        {"value": 'a"b<c>&\'d', "placeholder": Markup('<b class="x">&amp;</b>'), "title": "一二三"},
        {"value": lazy_gettext("Password"), "alt": Markup('"quoted"'), "weird<key": "v", "min": 0},
        {"value": 1.5, "step": "any", "list": "dl", "x_": "trailing", "autofocus": True},
    ]


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_html_params_is_wtforms_own(app, lang):
    from tongban.templating import WTFORMS_HTML_PARAMS, html_params

    with app.test_request_context(f"/?lang={lang}"):
        for kwargs in _cases():
            ours, theirs = html_params(**kwargs), WTFORMS_HTML_PARAMS(**kwargs)
            assert type(ours) is Markup and ours == theirs, kwargs


def test_wtforms_uses_it():
    import wtforms.widgets
    import wtforms.widgets.core as core

    from tongban.templating import html_params

    assert core.html_params is html_params and wtforms.widgets.html_params is html_params
    assert core.Input.html_params is html_params and core.Button.html_params is html_params


TEMPLATE = ("{{ _('Log in') }}|{{ _('Log in') }}|{{ gettext('Register') }}|{{ _('100%% sure') }}|"
            "{{ _('Operated by %(name)s', name=who) }}|{{ _('Operated by %(name)s', name=who) }}|"
            "{{ _('no such msgid <b>') }}")


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
@pytest.mark.parametrize("autoescape", [True, False])
def test_template_gettext_is_jinjas_own(app, lang, autoescape):
    from tongban import i18n

    ours = app.jinja_env.overlay(autoescape=autoescape)
    theirs = app.jinja_env.overlay(autoescape=autoescape)
    theirs.globals = dict(app.jinja_env.globals,
                          gettext=_make_new_gettext(lambda s: i18n.translations().ugettext(s)))
    with app.test_request_context(f"/?lang={lang}"):
        for _ in range(3):  # the first asks the catalogue, the next ones are kept
            a = ours.from_string(TEMPLATE).render(who="<X & Y>")
            b = theirs.from_string(TEMPLATE).render(who="<X & Y>")
            assert a == b
        if lang == "zh_CN":
            assert "登录" in a
        assert ("&lt;X &amp; Y&gt;" in a) is autoescape and "100% sure" in a
        with pytest.raises(KeyError):  # a placeholder without its variable still fails, every time
            ours.from_string("{{ _('Operated by %(name)s') }}").render()


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_login_page_is_the_same_html(app, lang, monkeypatch):
    """The log-in page rendered with WTForms' and Jinja's own functions and with ours: the same
    bytes (one request context, so one CSRF token; ``next`` and ``login_hint`` with markup)."""
    import wtforms.widgets
    import wtforms.widgets.core as core
    from flask import render_template

    from people.forms import LoginForm
    from tongban import i18n
    from tongban.templating import WTFORMS_HTML_PARAMS

    url = f"/login?lang={lang}&next=/oauth/authorize%3Fx%3D%22%3E%3Cscript%3E&login_hint=%22%3E%3Cb%3E"
    with app.test_request_context(url):
        def page():
            form = LoginForm()
            form.next.data = '/oauth/authorize?x="><script>'
            form.login.data = '"><b>'
            return render_template("idp/login.html", form=form)

        ours = page()
        with monkeypatch.context() as m:
            m.setattr(core, "html_params", WTFORMS_HTML_PARAMS)
            m.setattr(wtforms.widgets, "html_params", WTFORMS_HTML_PARAMS)
            m.setattr(core.Input, "html_params", staticmethod(WTFORMS_HTML_PARAMS))
            m.setattr(core.Button, "html_params", staticmethod(WTFORMS_HTML_PARAMS))
            m.setitem(app.jinja_env.globals, "gettext",
                      _make_new_gettext(lambda s: i18n.translations().ugettext(s)))
            theirs = page()
        assert ours == theirs
        assert '"><script>' not in ours and '"><b>' not in ours
        assert 'value="&#34;&gt;&lt;b&gt;"' in ours


def test_template_url_for_is_flasks_own(app):
    """Kept URLs are the ones app.url_for builds, per script root, host and scheme; URLs with
    other values (next=...) are built per call."""
    ours = app.jinja_env
    theirs = app.jinja_env.overlay()
    theirs.globals = dict(app.jinja_env.globals, url_for=app.url_for)
    source = ("{{ url_for('static', filename='css/tongban.css') }}|{{ url_for('idp.login') }}|"
              "{{ url_for('account.register', next=nxt) }}|{{ url_for('i18n.switch', code='en', next=nxt) }}")
    for base in ("http://a.example/", "https://a.example/sub/", "http://b.example/other/", "http://a.example/"):
        for nxt in ("/x?y=1", '/"><script>'):
            with app.test_request_context("/login", base_url=base):
                got = ours.from_string(source).render(nxt=nxt)
                assert got == theirs.from_string(source).render(nxt=nxt)
                assert "<script>" not in got
    with app.test_request_context("/login", base_url="https://a.example/sub/"):
        assert ours.from_string("{{ url_for('idp.login') }}").render() == "/sub/login"
    with app.test_request_context("/login", base_url="http://a.example/"):
        assert ours.from_string("{{ url_for('idp.login') }}").render() == "/login"


def test_template_url_for_follows_url_defaults(app, monkeypatch):
    with app.test_request_context("/login"):
        assert app.jinja_env.from_string("{{ url_for('idp.login') }}").render() == "/login"
        monkeypatch.setitem(app.url_default_functions, None,
                            [lambda endpoint, values: values.setdefault("from", "defaults")])
        assert app.jinja_env.from_string("{{ url_for('idp.login') }}").render() == "/login?from=defaults"


@pytest.mark.parametrize(("header", "expected"), [
    (None, "zh_CN"), ("", "zh_CN"), ("en", "en"), ("en-US,en;q=0.9", "en"), ("zh-CN,zh;q=0.9,en;q=0.8", "zh_CN"),
    ("en;q=0.5,zh;q=0.9", "zh_CN"), ("fr", "zh_CN"), ("fr,en;q=0.1", "en"), ("x" * 300, "zh_CN"),
])
def test_locale_from_accept_language(app, header, expected):
    from tongban.i18n import select_locale

    headers = {"Accept-Language": header} if header is not None else {}
    for _ in range(2):  # asked, then remembered
        with app.test_request_context("/", headers=headers):
            assert select_locale() == expected
            from flask import request

            best = request.accept_languages.best_match(["zh_CN", "zh", "en"], default="zh_CN")
            assert expected == ("en" if best == "en" else "zh_CN")
