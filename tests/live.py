"""Start the real production server (``make serve``) for tests that need one.

    proc, base_url = start_server({"TONGBAN_INSTANCE_DIR": ..., "DATABASE_URL": ...})
    ...
    stop(proc)

The server runs in its own process group (so ``stop`` ends make, the server and
every worker) on a free port on 127.0.0.1. Migrate the database first
(``migrate(env)``): ``make serve`` never does.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"

# Never leak the outer process's settings (an issuer, make's jobserver) into the server.
_SCRUB = ("TONGBAN_ISSUER", "TONGBAN_SERVE_ISSUER", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "FLASK_DEBUG")


def free_port() -> int:
    """A port the kernel just had free on 127.0.0.1 (a race remains; ``start_server`` retries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(env: dict) -> dict:
    """The current environment minus inherited settings, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    full.update({k: str(v) for k, v in env.items()})
    return full


def migrate(env: dict, timeout: float = 180) -> None:
    """``flask --app wsgi db upgrade`` for the instance and database ``env`` names."""
    subprocess.run([str(VENV_BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT,
                   env=server_env(env), check=True, timeout=timeout, capture_output=True)


def get(base_url: str, path: str, timeout: float = 5) -> tuple[int, bytes]:
    host, port = base_url.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait_ready(proc: subprocess.Popen, base_url: str, path: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            status, _ = get(base_url, path, timeout=2)
        except OSError:
            status = 0
        if status == 200:
            return True
        time.sleep(0.2)
    return False


def start_server(env: dict, server: str = "granian", *, ready_path: str = "/.well-known/openid-configuration",
                 timeout: float = 90, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """``make serve`` with ``env`` (plus SERVER=server and a free PORT unless given).

    Returns once ``ready_path`` answers 200. The server's output goes to a temporary
    log file (``proc.log_path``), quoted in the error when it does not come up.
    """
    last_log = ""
    for _ in range(attempts):
        port = int(env.get("PORT") or free_port())
        full = server_env({"HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", **env, "PORT": port,
                           "SERVER": server})
        log = tempfile.NamedTemporaryFile(prefix=f"tongban-{server}-", suffix=".log", delete=False)  # noqa: SIM115
        proc = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=PROJECT_ROOT, env=full,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        proc.log_path = log.name
        base_url = f"http://127.0.0.1:{port}"
        if _wait_ready(proc, base_url, ready_path, time.monotonic() + timeout):
            return proc, base_url
        stop(proc)
        last_log = Path(log.name).read_text(errors="replace")[-4000:]
        if "PORT" in env:  # a fixed port that is taken will not free itself
            break
    raise RuntimeError(f"{server} did not come up; last output:\n{last_log}")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    # workers outlive make for a moment; make sure the whole group is gone
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
