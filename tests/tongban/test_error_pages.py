"""Error pages speak Chinese in their own words, never Werkzeug's English; JSON keeps its shape."""

from __future__ import annotations

import pytest

HTML = {"Accept": "text/html"}
_WERKZEUG = ("The requested URL was not found", "The method is not allowed", "The data value transmitted",
             "The server encountered an internal error", "You don't have the permission")


def _assert_chinese_page(r, code: int, heading: str) -> str:
    page = r.get_data(as_text=True)
    assert r.status_code == code and r.mimetype == "text/html"
    assert heading in page and not any(w in page for w in _WERKZEUG), page[-1500:]
    return page


def test_404_and_405_in_chinese(client):
    _assert_chinese_page(client.get("/no/such/page", headers=HTML), 404, "页面不存在")
    r = client.delete("/seals/verify", headers=HTML)
    _assert_chinese_page(r, 405, "不允许")
    assert "POST" in r.headers["Allow"]  # the exception's own headers are kept


def test_json_errors_keep_their_shape(client):
    r = client.get("/api/v1/no-such-thing")
    assert r.status_code == 404 and set(r.get_json()) == {"error", "error_description"}
    assert r.get_json()["error"] == "not_found"


def test_413_in_chinese(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 1000)
    r = client.post("/seals/verify", data=b"x" * 5000, headers={**HTML, "Content-Type": "application/pdf"})
    _assert_chinese_page(r, 413, "过大")


def test_403_in_chinese(client, citizen):
    from tests.licence.test_http import _login

    _login(client)
    _assert_chinese_page(client.get("/clerk", headers=HTML), 403, "您无权")


def test_500_in_chinese_without_details(app, client, monkeypatch):
    def boom():
        raise RuntimeError("secret internal detail")

    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    monkeypatch.setitem(app.view_functions, "tongban.healthz", boom)
    r = client.get("/healthz", headers=HTML)
    page = _assert_chinese_page(r, 500, "服务出现故障")
    assert "secret internal detail" not in page and "RuntimeError" not in page


@pytest.mark.parametrize("path", ["/v/nosuchcode0000", "/seals/verify"])
def test_pages_say_beijing_time_or_nothing_in_utc(client, path):
    assert "UTC" not in client.get(path).get_data(as_text=True)
