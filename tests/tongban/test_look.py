"""The shared look: Chinese first, English on request, nothing inline the CSP would block."""

from __future__ import annotations

import re

from tests.live import PROJECT_ROOT


def test_home_is_chinese_by_default(client):
    html = client.get("/", headers={"Accept-Language": ""}).get_data(as_text=True)
    assert '<html lang="zh-CN">' in html
    assert "一个账号，办遍政务服务" in html
    assert 'name="viewport"' in html
    for link in ('href="/login"', 'href="/register"', 'href="/account"',
                 'href="/developers"', 'href="/lang/en?next=/"'):
        assert link in html


def test_english_switch(client):
    resp = client.get("/lang/en?next=/login")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    html = client.get("/").get_data(as_text=True)
    assert '<html lang="en">' in html and "One account for every government service" in html
    assert "/lang/zh_CN?next=/" in html


def test_error_page_uses_the_layout(client):
    resp = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert resp.status_code == 404
    html = resp.get_data(as_text=True)
    assert "页面不存在" in html and "404" in html and "tongban.css" in html


def test_stylesheet_is_served(client):
    resp = client.get("/static/css/tongban.css")
    assert resp.status_code == 200 and b".btn-primary" in resp.data and b".masked" in resp.data
    resp.close()


def test_templates_have_nothing_inline():
    inline = re.compile(r"""\sstyle\s*=|<style\b|<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=""", re.I)
    offenders = [str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "templates").rglob("*.html")
                 if inline.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_every_chinese_msgid_is_translated():
    from babel.messages.pofile import read_po

    path = PROJECT_ROOT / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as f:
        catalog = read_po(f)
    assert [m.id for m in catalog if m.id and not m.string] == []
