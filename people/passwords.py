"""Passwords: Argon2id hashing at the configured cost, and the policy.

The cost is ``TONGBAN_ARGON2_TIME_COST`` / ``_MEMORY_KIB`` / ``_PARALLELISM`` (checked
against a floor in ``tongban.config``; the reasoning and the measured figures are in
docs/sessions-and-security.md, "Password hashing cost"). A stored hash carries its own
parameters, so hashes made at another cost keep verifying; ``needs_rehash`` tells the
log-in to store a fresh hash at the current cost.

Argon2 is slow on purpose: callers run it with no database transaction open and no pooled
connection held (``tongban.extensions.release_connection``), so it never blocks SQLite's
writer or ties up a connection of the pool.

Its memory comes from one reused buffer per turn of ``_one_of_few`` (``people.argon2_memory``),
not from malloc, so a worker's request threads do not each keep 9 MiB in their malloc arenas.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_app_context
from flask_babel import lazy_gettext as _l

from tongban.config import ARGON2_DEFAULTS
from tongban.extensions import release_connection
from tongban.i18n import localised

from . import argon2_memory
from .errors import WeakPassword

_lock = threading.Lock()
# one hasher (and one dummy hash) per cost: building them is cheap, the dummy hash is not
_hashers: dict[tuple[int, int, int], tuple[PasswordHasher, str]] = {}


def cost() -> tuple[int, int, int]:
    """(time cost, memory KiB, parallelism) of new hashes: the app's settings, else the defaults."""
    cfg = current_app.config if has_app_context() else ARGON2_DEFAULTS
    return (int(cfg.get("TONGBAN_ARGON2_TIME_COST", ARGON2_DEFAULTS["TONGBAN_ARGON2_TIME_COST"])),
            int(cfg.get("TONGBAN_ARGON2_MEMORY_KIB", ARGON2_DEFAULTS["TONGBAN_ARGON2_MEMORY_KIB"])),
            int(cfg.get("TONGBAN_ARGON2_PARALLELISM", ARGON2_DEFAULTS["TONGBAN_ARGON2_PARALLELISM"])))


def _entry(params: tuple[int, int, int]) -> tuple[PasswordHasher, str]:
    found = _hashers.get(params)
    if found is None:
        with _lock:
            found = _hashers.get(params)
            if found is None:
                t, m, p = params
                h = PasswordHasher(time_cost=t, memory_cost=m, parallelism=p, hash_len=32, salt_len=16,
                                   type=Type.ID)
                # verified against when the account does not exist, so timing does not tell;
                # made in memory of its own, unmapped after (not left in this thread's arena)
                dummy = argon2_memory.hash_password("tongban-dummy-password", t, m, p, hash_len=32,
                                                    salt_len=16, pool_size=None)
                found = _hashers[params] = (h, dummy or h.hash("tongban-dummy-password"))
    return found


# At most this many Argon2 runs at once in this process (TONGBAN_ARGON2_CONCURRENCY; 0: one per
# CPU the process may run on). Argon2 releases the GIL, so without a bound every request thread
# of a worker may be inside it at once: on one core they are time-sliced, and each run's memory
# evicts the others' from the caches, so every run costs more CPU than run alone (measured: a
# log-in cost ~11 ms more CPU with Granian's 8 threads on one core than with one thread). Waiting
# here holds no connection and no transaction (see the module's docstring).
_gates: dict[int, threading.BoundedSemaphore] = {}


def _allowed_at_once() -> int:
    cfg = current_app.config if has_app_context() else {}
    n = int(cfg.get("TONGBAN_ARGON2_CONCURRENCY", 0) or 0)
    if n > 0:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _gate() -> threading.BoundedSemaphore:
    n = _allowed_at_once()
    found = _gates.get(n)
    if found is None:
        with _lock:
            found = _gates.setdefault(n, threading.BoundedSemaphore(n))
    return found


# a run waits at most this long for its turn, then runs anyway: the bound never refuses a check
_GATE_WAIT = 5.0


@contextlib.contextmanager
def _one_of_few():
    """Yields whether this run holds a turn (False: it waited its longest and runs anyway)."""
    gate = _gate()
    entered = gate.acquire(timeout=_GATE_WAIT)
    try:
        yield entered
    finally:
        if entered:
            gate.release()


def _pool_size(entered: bool, params: tuple[int, int, int]) -> int | None:
    """The pooled buffer a run may use: one for the current cost while it holds a turn (so the
    pool never holds more buffers than there are turns); none without a turn (see
    people.argon2_memory: a run without a turn maps memory of its own)."""
    return argon2_memory.needed_bytes(params[1], params[2]) if entered else None


def hash_password(password: str) -> str:
    params = cost()
    hasher = _entry(params)[0]
    with _one_of_few() as entered:
        t, m, p = params
        done = argon2_memory.hash_password(password, t, m, p, hash_len=hasher.hash_len,
                                           salt_len=hasher.salt_len,
                                           pool_size=_pool_size(entered, params))
        # None: the memory could not be had; argon2-cffi's own malloc then (it raises if it fails)
        return done if done is not None else hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (whatever cost it was made at). With no stored
    hash the check still runs, against a dummy hash at the current cost: same time."""
    params = cost()
    hasher, dummy = _entry(params)
    against = stored or dummy
    try:
        with _one_of_few() as entered:
            # the pooled-memory path takes what it parses with certainty; anything else (None)
            # is argon2-cffi's, with its own answers and errors
            ok = argon2_memory.verify_password(against, password, pool_size=_pool_size(entered, params))
            if ok is None:
                ok = hasher.verify(against, password)
            return ok and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def check_account_password(user, password: str) -> bool:
    """Whether ``password`` is ``user``'s: the stored hash is read, then the session's read
    transaction ends before Argon2 runs (nothing may have been written before this)."""
    stored = user.password_hash
    release_connection()
    return verify_password(stored, password)


def new_password_hash(password: str) -> str:
    """``hash_password`` with the session's read transaction ended first (see above)."""
    release_connection()
    return hash_password(password)


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made at another cost (or another variant) than the current one."""
    try:
        return _entry(cost())[0].check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


def check_policy(password: str, *, id_number: str = "", phone: str = "") -> None:
    """At least N characters with three of: lower, upper, digit, symbol; not the ID or phone."""
    minimum = current_app.config["TONGBAN_PASSWORD_MIN_LENGTH"]
    if len(password) < minimum:
        raise WeakPassword(localised(_l("Password must be at least %(n)d characters long.", n=minimum)))
    if len(password) > 128:
        raise WeakPassword(localised(_l("Password must be at most 128 characters long.")))
    classes = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]"))
    if classes < 3:
        raise WeakPassword(localised(_l(
            "Password must contain three of: lower-case letters, upper-case letters, digits, symbols.")))
    lowered = password.lower()
    for secret in (id_number, phone):
        if secret and (secret.lower() in lowered or lowered in secret.lower()):
            raise WeakPassword(localised(_l("Password must not contain your ID number or phone number.")))
