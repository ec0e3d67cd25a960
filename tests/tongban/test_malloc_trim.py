"""The worker's malloc trimmer (tongban/malloc_trim.py): it hands freed heap back to the kernel,
only after the process did some work, from a daemon thread started by a worker's first request,
and does nothing where the C library is not glibc."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from flask import Flask

from tongban import malloc_trim as mt

glibc = pytest.mark.skipif(not mt.supported(), reason="malloc_trim is glibc's")


@glibc
def test_a_trim_returns_free_chunks_below_a_live_one():
    # a fresh interpreter: 24 MiB of small blocks from the main heap, one block above them kept
    # alive (so glibc's own trim from the top cannot return them), the rest freed; RssAnon stays
    # up until the trimmer's pass
    code = textwrap.dedent("""
        import ctypes, time
        from tongban import malloc_trim as mt
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD: free() itself never trims here
        def anon():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        blocks = [libc.malloc(1000) for _ in range(24 * 1024)]
        for b in blocks:
            ctypes.memset(b, 1, 1000)
        pin = libc.malloc(1000)
        for b in blocks:
            libc.free(b)
        t = mt._Trimmer()
        t.cpu_at_last = -1.0
        before = anon()
        done = t.trim_if_busy()
        print(before, anon(), done, t.trims)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    before, after, done, trims = out.stdout.split()
    assert done == "True" and trims == "1"
    assert int(before) - int(after) > 16 * 1024, out.stdout  # KiB: most of the 24 MiB went back


@glibc
def test_an_idle_process_is_not_trimmed_again():
    t = mt._Trimmer()
    t.cpu_at_last = time.process_time()
    assert t.trim_if_busy() is False  # no CPU used since: nothing new was freed
    end = time.process_time() + mt.BUSY_CPU_SECONDS * 2
    while time.process_time() < end:
        pass
    assert t.trim_if_busy() is True
    assert t.trims == 1
    assert t.trim_if_busy() is False  # the trim itself does not count as work


def test_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(mt, "_trim", None)
    t = mt._Trimmer()
    t.cpu_at_last = -1.0
    assert t.trim_if_busy() is False and t.trims == 0
    app = Flask(__name__)
    app.config["TONGBAN_MALLOC_TRIM_SECONDS"] = 10
    mt.init_app(app)
    assert not app.before_request_funcs  # no hook, so no thread


def test_find_trim_none_without_glibc(monkeypatch):
    class NoGlibc:
        def __init__(self, name):
            pass

        def __getattr__(self, name):
            raise AttributeError(name)  # musl: no gnu_get_libc_version

    monkeypatch.setattr(mt.ctypes, "CDLL", NoGlibc)
    assert mt._find_trim() is None


@glibc
def test_the_thread_trims_a_busy_process_periodically():
    app = Flask(__name__)
    app.config["TONGBAN_MALLOC_TRIM_SECONDS"] = 1
    t = mt._Trimmer()
    t.cpu_at_last = time.process_time()
    t.ensure(app)
    assert t.thread is not None and t.thread.daemon  # gone with the process, never keeps it alive
    deadline = time.monotonic() + 10
    while t.trims == 0 and time.monotonic() < deadline:
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass
        time.sleep(0.2)
    assert t.trims >= 1


@glibc
def test_a_request_starts_the_process_trimmer(client):
    assert client.application.config["TONGBAN_MALLOC_TRIM_SECONDS"] == 10
    client.get("/.well-known/openid-configuration")
    assert mt.trimmer._alive()
    assert mt.trimmer.thread.name == "tongban-malloc-trim"


def test_zero_starts_no_thread(monkeypatch):
    monkeypatch.setattr(mt, "trimmer", mt._Trimmer())
    app = Flask(__name__)
    app.config["TONGBAN_MALLOC_TRIM_SECONDS"] = 0
    mt.init_app(app)

    @app.get("/")
    def index():
        return "ok"

    app.test_client().get("/")
    assert mt.trimmer.thread is None
