"""``make serve`` really serves: Granian by default, gunicorn with SERVER=gunicorn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.live import get, migrate, start_server, stop


@pytest.fixture
def instance_env(tmp_path):
    env = {"TONGBAN_INSTANCE_DIR": str(tmp_path / "instance"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'tongban.db'}"}
    migrate(env)
    return env


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_make_serve_answers_with_its_own_issuer(instance_env, server):
    proc, base_url = start_server(instance_env, server=server)
    try:
        status, body = get(base_url, "/.well-known/openid-configuration")
        assert status == 200
        port = base_url.rsplit(":", 1)[1]
        assert json.loads(body)["issuer"] == f"http://127.0.0.1:{port}"
        status, _ = get(base_url, "/")
        assert status == 200
        log = Path(proc.log_path).read_text(encoding="utf-8", errors="replace").lower()
        assert "debugger" not in log
    finally:
        stop(proc)
    assert proc.returncode is not None


def test_serve_command_line(monkeypatch):
    from tongban import serve

    argv = serve.command({"HOST": "127.0.0.1", "PORT": "9001", "WEB_CONCURRENCY": "3"})
    assert argv[0].endswith("granian") and argv[-1] == "wsgi:app"
    assert argv[argv.index("--interface") + 1] == "wsgi"
    assert argv[argv.index("--workers") + 1] == "3"
    argv = serve.command({"SERVER": "gunicorn", "PORT": "9001", "WEB_CONCURRENCY": "2"})
    assert argv[argv.index("-b") + 1] == "127.0.0.1:9001" and argv[argv.index("-w") + 1] == "2"
    with pytest.raises(SystemExit):
        serve.command({"SERVER": "uwsgi"})
    with pytest.raises(SystemExit):
        serve.command({"PORT": "eighty"})
