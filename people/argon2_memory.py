"""Argon2id whose working memory comes from a few reused buffers instead of malloc.

Why: each Argon2 run needs its whole memory cost at once (9 MiB by default). glibc serves the
first such block with mmap, but freeing it raises the dynamic mmap threshold above 9 MiB, so
every later block comes from the malloc arena of the thread that runs the check, and each
arena keeps its 9 MiB resident after the free (its trim threshold rose too). A worker's
request threads each end up holding one: measured with 8 threads, +74 MiB of RSS that never
goes back (docs/performance.md, "Argon2 memory"). Fixing the mmap threshold instead
(mallopt) maps and faults in 9 MiB on every check: 2305 page faults and ~17 % more CPU.

So each run that holds one of the few Argon2 turns of the process (``passwords._one_of_few``)
borrows a buffer from a small pool, through the reference library's ``allocate_cbk`` /
``free_cbk``: at most one buffer per turn ever taken at once, each faulted in once and reused.
The library still wipes the memory before handing it back (``free_memory`` calls
``clear_internal_memory`` before the callback), exactly as it does before ``free()``.

A run without a turn (the bounded wait ran out) or for a stored hash whose memory cost is
larger than the pool's buffers gets a mapping of its own, unmapped right after: its memory
goes back to the system, nothing stays in a thread's arena.

The results are argon2-cffi's: the same encoded hashes (same format, salt from os.urandom) and
the same verifications. Only what this module parses with certainty takes this path (an
``$argon2id$v=19$`` hash in canonical form with sane parameters); anything else returns
``None`` and the caller uses argon2-cffi's own ``PasswordHasher``, which then answers exactly
as before (legacy variants, odd encodings, invalid hashes and their errors).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import mmap
import os
import re
import threading

from argon2.low_level import ffi, lib  # argon2-cffi re-exports its bindings (public: __all__)

_TYPE_ID = lib.Argon2_id
_VERSION = 19  # 0x13, the version argon2-cffi writes and the only one taken on this path
_HEADER = "$argon2id$v=19$"
# what argon2-cffi's hash_secret writes (the reference library's encode_string), nothing else:
# decimal numbers without leading zeros, salt and hash in unpadded standard base64
_ENCODED = re.compile(r"\$argon2id\$v=19\$m=([1-9][0-9]{0,9}),t=([1-9][0-9]{0,9}),p=([1-9][0-9]{0,9})"
                      r"\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")
_U32 = 0xFFFFFFFF
# a run's own mapping is made for at most this much (the largest cost tongban.config accepts);
# a stored hash asking for more is left to argon2-cffi (which would fail or malloc it)
MAX_OWN_KIB = 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes | None:
    """The bytes of unpadded base64 ``text``, or None when it is not the canonical encoding of
    them (the reference decoder refuses non-zero padding bits; Python's would not)."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        return None
    return raw if _b64(raw) == text else None


def needed_bytes(m_kib: int, parallelism: int) -> int:
    """The bytes the reference library asks for at this cost (core.c, ``argon2_ctx``: at least
    8 blocks per lane, rounded down to a whole number of segments)."""
    blocks = max(m_kib, 8 * parallelism)
    blocks -= blocks % (4 * parallelism)
    return blocks * 1024


class Buffer:
    """One anonymous private mapping of ``size`` bytes, handed to Argon2 as its memory.

    The two C callbacks close over this buffer only; a run that uses them owns the buffer for
    the run (the pool gives it to one holder at a time)."""

    def __init__(self, size: int, *, huge_pages: bool = False) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if huge_pages and hasattr(mmap, "MADV_HUGEPAGE"):
            # a pooled buffer lives as long as the process: transparent huge pages (where the
            # kernel offers them, "madvise" mode included) spare Argon2's random reads over
            # 9 MiB most TLB misses; measured ~5 % less CPU per check (docs/performance.md)
            with contextlib.suppress(OSError):
                self._map.madvise(mmap.MADV_HUGEPAGE)
        self._memory = ffi.from_buffer("uint8_t[]", self._map, require_writable=True)
        memory, limit = self._memory, size

        def allocate(where, nbytes):
            # never more than the mapping: NULL makes the library fail the run (MEMORY_ALLOCATION_ERROR)
            where[0] = memory if nbytes <= limit else ffi.NULL
            return 0

        def free(pointer, nbytes):
            pass  # wiped by the library already; the mapping stays for the next run

        self.allocate_cbk = ffi.callback("int(uint8_t **, size_t)", allocate)
        self.free_cbk = ffi.callback("void(uint8_t *, size_t)", free)

    def view(self) -> bytes:
        """A copy of the memory (for the tests: it must be wiped after every run)."""
        return bytes(self._map)

    def close(self) -> None:
        """Unmap now (a run's own buffer), rather than whenever it is collected."""
        ffi.release(self._memory)
        self._map.close()


class Pool:
    """The buffers of the runs that hold a turn: one taken per run, given back after it, so
    there are never more than the turns taken at once. They are sized for the current cost;
    one too small for it (the cost was raised) is replaced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Buffer] = []

    def take(self, size: int) -> Buffer:
        with self._lock:
            found = self._free.pop() if self._free else None
        if found is not None and found.size >= size:
            return found
        if found is not None:
            found.close()
        return Buffer(size, huge_pages=True)

    def give(self, buffer: Buffer) -> None:
        with self._lock:
            self._free.append(buffer)

    def sizes(self) -> list[int]:
        with self._lock:
            return [b.size for b in self._free]

    def clear(self) -> None:
        with self._lock:
            dropped, self._free = self._free, []
        for buffer in dropped:
            buffer.close()

    def _after_fork(self) -> None:
        # a child must not inherit a lock some other thread of the parent held
        self._lock = threading.Lock()


pool = Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=pool._after_fork)


def _run(password: bytes, salt: bytes, t: int, m: int, p: int, hash_len: int, *,
         pool_size: int | None) -> bytes | None:
    """The raw Argon2id output, or None when the memory could not be had (then the caller
    falls back to argon2-cffi). ``pool_size``: take a pooled buffer of at least that many
    bytes (the caller holds a turn); None: a mapping of this run's own."""
    need = needed_bytes(m, p)
    own = pool_size is None or need > pool_size
    if own and m > MAX_OWN_KIB:
        return None
    try:
        buffer = Buffer(need) if own else pool.take(pool_size)  # type: ignore[arg-type]
    except (OSError, ValueError, MemoryError):
        return None
    rv = None
    try:
        out = ffi.new("uint8_t[]", hash_len)
        pwd = ffi.new("uint8_t[]", password)
        salt_c = ffi.new("uint8_t[]", salt)
        ctx = ffi.new("argon2_context *", {
            "out": out, "outlen": hash_len,
            "pwd": pwd, "pwdlen": len(password),
            "salt": salt_c, "saltlen": len(salt),
            "secret": ffi.NULL, "secretlen": 0, "ad": ffi.NULL, "adlen": 0,
            "t_cost": t, "m_cost": m, "lanes": p, "threads": p, "version": _VERSION,
            "allocate_cbk": buffer.allocate_cbk, "free_cbk": buffer.free_cbk,
            "flags": lib.ARGON2_DEFAULT_FLAGS,
        })
        rv = lib.argon2_ctx(ctx, _TYPE_ID)
    finally:
        # a run that failed after its memory was handed out may not have wiped it (the library
        # returns without finalize when a lane's thread cannot start): unmapped, never lent again
        if own or rv != lib.ARGON2_OK:
            buffer.close()
        else:
            pool.give(buffer)
    if rv == lib.ARGON2_MEMORY_ALLOCATION_ERROR:
        return None
    if rv != lib.ARGON2_OK:
        raise _Failed(rv)
    return bytes(ffi.buffer(out, hash_len))


class _Failed(Exception):
    """The library refused the parameters (argon2-cffi raises VerificationError then)."""

    def __init__(self, code: int) -> None:
        super().__init__(ffi.string(lib.argon2_error_message(code)).decode("ascii"))
        self.code = code


def hash_password(password: str, t: int, m: int, p: int, *, hash_len: int, salt_len: int,
                  pool_size: int | None) -> str | None:
    """``PasswordHasher(t, m, p, hash_len, salt_len, type=ID).hash(password)``, or None when
    the memory could not be had or the library refused the cost (then argon2-cffi, run by the
    caller, raises its HashingError)."""
    salt = os.urandom(salt_len)
    try:
        raw = _run(password.encode("utf-8"), salt, t, m, p, hash_len, pool_size=pool_size)
    except _Failed:
        return None
    if raw is None:
        return None
    return f"{_HEADER}m={m},t={t},p={p}${_b64(salt)}${_b64(raw)}"


def parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    """(t, m, p, salt, hash) of an encoded Argon2id v19 hash in canonical form, else None."""
    found = _ENCODED.fullmatch(stored)
    if found is None:
        return None
    m, t, p = (int(x) for x in found.group(1, 2, 3))
    if m > _U32 or t > _U32 or p > _U32:
        return None
    salt, digest = _unb64(found.group(4)), _unb64(found.group(5))
    if salt is None or digest is None:
        return None
    return t, m, p, salt, digest


def verify_password(stored: str, password: str, *, pool_size: int | None) -> bool | None:
    """Whether ``password`` matches ``stored``, as ``PasswordHasher().verify`` answers (True, or
    False where it raises VerifyMismatchError or VerificationError); None: not taken on this
    path (a hash this module does not parse with certainty, or no memory), use argon2-cffi."""
    parsed = parse(stored)
    if parsed is None:
        return None
    t, m, p, salt, digest = parsed
    try:
        raw = _run(password.encode("utf-8"), salt, t, m, p, len(digest), pool_size=pool_size)
    except _Failed:
        return False
    if raw is None:
        return None
    return hmac.compare_digest(raw, digest)
