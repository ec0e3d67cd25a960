"""Give freed C heap back to the kernel now and then: a worker's RSS after a busy spell.

glibc returns free memory to the kernel only from the top of each heap (``M_TRIM_THRESHOLD``);
free chunks below a live one stay resident for good. A worker's main heap holds ~16 MiB of such
holes after its start-up and first log-ins (measured on PostgreSQL + Redis: 40.8 MiB of heap,
25.1 MiB after a trim). ``malloc_trim(0)`` walks every arena and ``madvise(MADV_DONTNEED)``s the whole free
pages in it, which is the only way to get them back without unmapping.

A daemon thread per worker process (``ProcessThread``: re-created after a fork, gone with the
process) wakes every ``TONGBAN_MALLOC_TRIM_SECONDS`` and trims only when the process used CPU
since the last trim (``time.process_time``: an idle worker has freed nothing new, and a trim
costs a walk of the heaps). A no-op wherever the C library is not glibc (musl, macOS): the
function is looked up once, and without it no thread starts. Figures: docs/performance.md,
"Worker memory".
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable

from flask import Flask

from .background import ProcessThread, at_first_request

log = logging.getLogger(__name__)

# CPU seconds the process must have used since the last trim for the next one to run
BUSY_CPU_SECONDS = 0.05


def _find_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library, or no ctypes loader)."""
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None)
        # only glibc has gnu_get_libc_version; musl has no malloc_trim with this meaning
        libc.gnu_get_libc_version  # noqa: B018 - the lookup is the test
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _find_trim()


def supported() -> bool:
    return _trim is not None


class _Trimmer(ProcessThread):
    name = "tongban-malloc-trim"

    def __init__(self) -> None:
        super().__init__()
        self.cpu_at_last = 0.0
        self.trims = 0  # in this process (for the tests and a debugger)

    def timeout(self, app: Flask) -> float:
        return float(app.config["TONGBAN_MALLOC_TRIM_SECONDS"])

    def run_pass(self, app: Flask, woken: bool) -> None:
        self.trim_if_busy()

    def trim_if_busy(self) -> bool:
        """Trim when the process used at least ``BUSY_CPU_SECONDS`` since the last trim."""
        cpu = time.process_time()
        if _trim is None or cpu - self.cpu_at_last < BUSY_CPU_SECONDS:
            return False
        try:
            _trim(0)
        except Exception:  # never let memory housekeeping take the thread down with a traceback loop
            log.exception("malloc_trim failed")
            return False
        # the trim's own CPU does not count as the next interval's work
        self.cpu_at_last = time.process_time()
        self.trims += 1
        return True


trimmer = _Trimmer()


def init_app(app: Flask) -> None:
    if _trim is None:
        return  # not glibc: nothing to trim, no thread
    def start() -> None:
        if app.config["TONGBAN_MALLOC_TRIM_SECONDS"] > 0:
            trimmer.cpu_at_last = time.process_time()
            trimmer.ensure(app)

    at_first_request(app, start)
