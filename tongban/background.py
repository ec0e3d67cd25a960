"""A daemon thread per process that sleeps until woken (or a timeout), for background work
the embedded default does in the web processes (outbox deliveries, the audit chainer)."""

from __future__ import annotations

import os
import threading

from flask import Flask


class ProcessThread:
    """One daemon thread per process, re-created after a fork; ``wake`` starts it if needed.

    Subclasses implement ``run_pass(app, woken)``, called after each wake or timeout."""

    name = "tongban-background"

    def __init__(self):
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.app: Flask | None = None

    def _alive(self) -> bool:
        return self.thread is not None and self.pid == os.getpid() and self.thread.is_alive()

    def ensure(self, app: Flask) -> None:
        if self._alive():
            return
        with self.lock:
            if self._alive():
                return
            self.app, self.pid = app, os.getpid()
            self.event = threading.Event()
            self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self.thread.start()

    def wake(self, app: Flask) -> None:
        self.ensure(app)
        self.event.set()

    def timeout(self, app: Flask) -> float:
        raise NotImplementedError

    def run_pass(self, app: Flask, woken: bool) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        app = self.app
        while True:
            woken = self.event.wait(self.timeout(app))
            self.run_pass(app, woken)


def at_first_request(app: Flask, start) -> None:
    """Call ``start()`` at the first request each process serves: what starts a process's
    background threads in the process that serves (a Granian or gunicorn worker, again after a
    fork), never in one that only imported the app. One comparison per request after that."""
    started = {"pid": 0}

    @app.before_request
    def _start_background():
        if started["pid"] != os.getpid():
            started["pid"] = os.getpid()
            start()
