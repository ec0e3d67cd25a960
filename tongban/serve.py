"""``make serve``: exec the production WSGI server (Granian, or gunicorn with SERVER=gunicorn).

Environment: HOST (127.0.0.1), PORT (8000), WEB_CONCURRENCY (worker processes,
default the core count), WEB_THREADS (Granian blocking threads per worker, 8),
SERVER (``granian`` or ``gunicorn``). No debugger and no migration: run
``flask --app wsgi db upgrade`` first. MALLOC_ARENA_MAX is 2 unless set (see ``_malloc_arenas``).

The server replaces this process (``os.execv``) so it receives signals directly:
SIGTERM/SIGINT stop it and its workers.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

SERVERS = ("granian", "gunicorn")


def _positive_int(env, name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.exit(f"error: {name} must be a whole number, not {raw!r}")
    if value < 1:
        sys.exit(f"error: {name} must be at least 1")
    return value


def _executable(name: str) -> str:
    """The server installed next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        sys.exit(f"error: {name} is not installed (run `make install`)")
    return found


def command(environ: Mapping[str, str] | None = None) -> list[str]:
    """The argv that serves ``wsgi:app`` as the environment asks."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    host = env.get("HOST") or "127.0.0.1"
    port = str(_positive_int(env, "PORT", 8000))
    workers = str(_positive_int(env, "WEB_CONCURRENCY", os.cpu_count() or 1))
    threads = _positive_int(env, "WEB_THREADS", 8)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = (env.get("SERVER") or "granian").strip().lower()
    if server == "granian":
        # A WSGI app holding database connections: a handful of blocking threads per
        # worker (Granian's default is hundreds), a bounded in-process queue, and the
        # rest of the load waiting in the listen backlog.
        return [
            _executable("granian"), "--interface", "wsgi", "--host", host, "--port", port,
            "--workers", workers, "--blocking-threads", str(threads),
            "--backpressure", str(threads * 4), "--backlog", "2048",
            "--no-ws", "--http", "1", "--workers-kill-timeout", "10",
            "--respawn-failed-workers", "--no-reload", "wsgi:app",
        ]
    if server == "gunicorn":
        # Sync workers; the access log stays off (gunicorn's default without --access-logfile);
        # no control socket: its default path is per user, and several servers may run side by side.
        return [
            _executable("gunicorn"), "-w", workers, "-b", bind, "-k", "sync",
            "--graceful-timeout", "10", "--timeout", "60", "--backlog", "2048",
            "--no-control-socket", "wsgi:app",
        ]
    sys.exit(f"error: SERVER must be one of {', '.join(SERVERS)}, not {server!r}")


def _metrics_dir() -> None:
    """prometheus-client's multiprocess mode: every worker writes its values to files in one
    folder and a scrape of any worker adds them up. A fresh folder per start (stale files of
    an earlier run would be added in): PROMETHEUS_MULTIPROC_DIR emptied of its ``*.db`` files,
    or a new temporary folder."""
    import tempfile

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tongban-metrics-")
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def _malloc_arenas() -> None:
    """glibc gives every thread that allocates its own malloc arena (up to 8 per core), and
    freed memory stays in the arena it came from: a worker's blocking threads each hold pages
    the others cannot reuse. Two arenas keep a worker several MB smaller at no measurable cost
    (bench/memory.py). glibc reads the variable when a process starts: the server and its
    workers inherit it. An operator's own value is kept."""
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")


def main() -> None:
    from .config import ConfigError, check_environment

    try:
        check_environment()
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    host = os.environ.get("HOST") or "127.0.0.1"
    port = _positive_int(os.environ, "PORT", 8000)
    # config.py uses this only when TONGBAN_ISSUER is set nowhere else
    os.environ["TONGBAN_SERVE_ISSUER"] = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    os.environ.pop("FLASK_DEBUG", None)
    _metrics_dir()
    _malloc_arenas()
    argv = command()
    # wsgi.py lives in the project root, which is where `make serve` runs
    os.chdir(Path(__file__).resolve().parent.parent)
    sys.stdout.flush()
    os.execv(argv[0], argv)  # noqa: S606 - a fixed argv, no shell


if __name__ == "__main__":
    main()
