"""Argon2id on pooled memory (people/argon2_memory.py): the same hashes and answers as
argon2-cffi, the memory wiped after each run, bounded by the turns, and never a refusal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type
from argon2.low_level import hash_secret

from people import argon2_memory, passwords

# (t, m KiB, p): cheap ones, several lanes, and the default cost
COSTS = [(1, 8, 1), (2, 64, 2), (3, 256, 4), (1, 100, 3), (4, 9216, 1)]
SALT = bytes(range(16))


def _cffi(t: int, m: int, p: int) -> PasswordHasher:
    return PasswordHasher(time_cost=t, memory_cost=m, parallelism=p, hash_len=32, salt_len=16, type=Type.ID)


@pytest.fixture
def watched_buffers(monkeypatch):
    """Every buffer made, and what each own buffer held when it was unmapped."""
    made: list[argon2_memory.Buffer] = []
    at_close: list[bytes] = []
    real_init, real_close = argon2_memory.Buffer.__init__, argon2_memory.Buffer.close

    def init(self, size, **kwargs):
        real_init(self, size, **kwargs)
        made.append(self)

    def close(self):
        at_close.append(self.view())
        real_close(self)

    monkeypatch.setattr(argon2_memory.Buffer, "__init__", init)
    monkeypatch.setattr(argon2_memory.Buffer, "close", close)
    argon2_memory.pool.clear()
    yield made, at_close
    argon2_memory.pool.clear()


@pytest.mark.parametrize("t,m,p", COSTS)
def test_same_encoded_hash_as_argon2_cffi(t, m, p, monkeypatch):
    """Same salt in, the very same encoded string out (format, parameters, digest)."""
    expected = hash_secret(b"Right-Passw0rd!", SALT, t, m, p, 32, Type.ID).decode("ascii")
    monkeypatch.setattr(os, "urandom", lambda n: SALT[:n])
    for pool_size in (None, argon2_memory.needed_bytes(max(m, 9216), p)):
        made = argon2_memory.hash_password("Right-Passw0rd!", t, m, p, hash_len=32, salt_len=16,
                                           pool_size=pool_size)
        assert made == expected


@pytest.mark.parametrize("t,m,p", COSTS)
def test_verifies_like_argon2_cffi_both_ways(t, m, p):
    cffi = _cffi(t, m, p)
    theirs = cffi.hash("Right-Passw0rd!")
    ours = argon2_memory.hash_password("Right-Passw0rd!", t, m, p, hash_len=32, salt_len=16, pool_size=None)
    assert ours is not None and ours != theirs  # a fresh random salt each
    assert cffi.verify(ours, "Right-Passw0rd!") is True
    with pytest.raises(Exception):
        cffi.verify(ours, "Wrong-Passw0rd!")
    for pool_size in (None, argon2_memory.needed_bytes(9216, 1)):
        assert argon2_memory.verify_password(theirs, "Right-Passw0rd!", pool_size=pool_size) is True
        assert argon2_memory.verify_password(theirs, "Wrong-Passw0rd!", pool_size=pool_size) is False
        assert argon2_memory.verify_password(ours, "Right-Passw0rd!", pool_size=pool_size) is True
    argon2_memory.pool.clear()


@pytest.mark.parametrize("password", ["", "密码-Passw0rd!", "x" * 128])
def test_password_bytes_like_argon2_cffi(password, monkeypatch):
    """Empty, non-ASCII (UTF-8, as argon2-cffi encodes) and the longest the policy allows."""
    expected = hash_secret(password.encode("utf-8"), SALT, 1, 64, 1, 32, Type.ID).decode("ascii")
    monkeypatch.setattr(os, "urandom", lambda n: SALT[:n])
    assert argon2_memory.hash_password(password, 1, 64, 1, hash_len=32, salt_len=16, pool_size=None) == expected
    assert argon2_memory.verify_password(expected, password, pool_size=None) is True
    assert argon2_memory.verify_password(expected, password + "!", pool_size=None) is False


def test_login_check_takes_hashes_at_another_cost(app, watched_buffers):
    """Through the log-in's function: a stored hash at another cost than the current one (smaller,
    and larger than the pooled buffers) still verifies, and a new hash is at the current cost."""
    made, at_close = watched_buffers
    current = passwords.cost()
    assert current == (4, 9216, 1)
    for t, m, p in [(1, 8, 1), (2, 64, 2), (1, 12288, 1)]:
        stored = _cffi(t, m, p).hash("Right-Passw0rd!")
        assert passwords.verify_password(stored, "Right-Passw0rd!") is True
        assert passwords.verify_password(stored, "Wrong-Passw0rd!") is False
        assert passwords.needs_rehash(stored) is True
    fresh = passwords.hash_password("Right-Passw0rd!")
    assert fresh.startswith("$argon2id$v=19$m=9216,t=4,p=1$")
    assert _cffi(*current).verify(fresh, "Right-Passw0rd!") is True
    assert passwords.needs_rehash(fresh) is False
    # the 12 MiB hash ran in memory of its own, unmapped after; the pool kept current-cost buffers only
    assert 12288 * 1024 in [b.size for b in made]
    assert set(argon2_memory.pool.sizes()) == {argon2_memory.needed_bytes(9216, 1)}
    assert at_close and not any(any(snapshot) for snapshot in at_close)


def test_memory_is_wiped_after_every_run(app, watched_buffers):
    """The library wipes its memory before handing it back, pooled or not: nothing of a run
    (derived from the password) stays readable in the buffer afterwards."""
    made, at_close = watched_buffers
    stored = passwords.hash_password("Right-Passw0rd!")
    assert passwords.verify_password(stored, "Right-Passw0rd!") is True
    assert passwords.verify_password(stored, "Wrong-Passw0rd!") is False
    pooled = [b for b in made if b.size == argon2_memory.needed_bytes(9216, 1)]
    assert pooled and all(not any(b.view()) for b in pooled if b in argon2_memory.pool._free)
    # the check is real: a run whose memory is not wiped would show here (a run with its own
    # buffer, inspected just before it is unmapped)
    assert argon2_memory.verify_password(stored, "Right-Passw0rd!", pool_size=None) is True
    assert at_close and not any(any(snapshot) for snapshot in at_close)


def test_a_run_never_gets_more_memory_than_its_buffer():
    """The callback hands out the buffer only when it is large enough; otherwise the library fails
    the run (no overflow), and the caller falls back to argon2-cffi (None)."""
    buffer = argon2_memory.Buffer(64 * 1024)
    try:
        where = argon2_memory.ffi.new("uint8_t **")
        buffer.allocate_cbk(where, 64 * 1024)
        assert where[0] != argon2_memory.ffi.NULL
        buffer.allocate_cbk(where, 64 * 1024 + 1)
        assert where[0] == argon2_memory.ffi.NULL
    finally:
        buffer.close()


def test_run_without_a_turn_uses_memory_of_its_own(app, monkeypatch, watched_buffers):
    """The bounded wait still never refuses: a run that waited its longest runs on a mapping of
    its own (unmapped after), never on a pooled buffer another run may be using."""
    made, at_close = watched_buffers
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_CONCURRENCY", 1)
    monkeypatch.setattr(passwords, "_GATE_WAIT", 0.01)
    stored = passwords.hash_password("Right-Passw0rd!")
    argon2_memory.pool.clear()
    made.clear()
    at_close.clear()
    gate = passwords._gate()
    assert gate.acquire(timeout=1)
    try:
        assert passwords.verify_password(stored, "Right-Passw0rd!") is True
        assert passwords.verify_password(stored, "Wrong-Passw0rd!") is False
        assert passwords.verify_password(None, "Right-Passw0rd!") is False
    finally:
        gate.release()
    assert argon2_memory.pool.sizes() == []
    assert len(made) == len(at_close) == 3


def test_hashes_not_taken_on_this_path_answer_as_argon2_cffi(app):
    """Other variants, odd encodings and broken hashes go to argon2-cffi, with its answers."""
    legacy = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.I).hash("Right-Passw0rd!")
    assert argon2_memory.verify_password(legacy, "Right-Passw0rd!", pool_size=None) is None
    assert passwords.verify_password(legacy, "Right-Passw0rd!") is True
    assert passwords.verify_password(legacy, "Wrong-Passw0rd!") is False
    good = _cffi(1, 64, 1).hash("Right-Passw0rd!")
    head, _, digest = good.rpartition("$")
    # non-zero padding bits in the last base64 character: the reference decoder refuses it
    odd_bits = f"{head}${digest[:-1]}{'B' if digest[-1] == 'A' else chr(ord(digest[-1]) ^ 1)}"
    padded = f"{good}="
    leading_zero = good.replace("m=64,", "m=064,")
    for odd in (odd_bits, padded, leading_zero, good + "\n", good.replace("v=19", "v=16"), "", "$argon2id$"):
        assert argon2_memory.parse(odd) is None, odd
        try:
            expected = PasswordHasher().verify(odd, "Right-Passw0rd!")
        except Exception:
            expected = False
        assert passwords.verify_password(odd, "Right-Passw0rd!") is expected, odd
    # parameters the library refuses (salt too short): refused on both paths
    short_salt = f"$argon2id$v=19$m=64,t=1,p=1$AAAA${digest}"
    assert argon2_memory.verify_password(short_salt, "Right-Passw0rd!", pool_size=None) is False
    assert passwords.verify_password(short_salt, "Right-Passw0rd!") is False


def test_pool_holds_at_most_one_buffer_per_turn_and_lends_each_to_one_run(app, monkeypatch):
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_CONCURRENCY", 2)
    monkeypatch.setattr(argon2_memory, "pool", argon2_memory.Pool())
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_TIME_COST", 1)
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_MEMORY_KIB", 1024)
    stored = passwords.hash_password("Right-Passw0rd!")
    lent: set[int] = set()
    clash: list[int] = []
    lock = threading.Lock()
    pool = argon2_memory.pool
    real_take, real_give = pool.take, pool.give

    def take(size):
        buffer = real_take(size)
        with lock:
            if id(buffer) in lent:
                clash.append(id(buffer))
            lent.add(id(buffer))
        return buffer

    def give(buffer):
        with lock:
            lent.discard(id(buffer))
        real_give(buffer)

    monkeypatch.setattr(pool, "take", take)
    monkeypatch.setattr(pool, "give", give)
    results: dict[int, bool] = {}

    def check(i: int) -> None:
        with app.app_context():
            results[i] = passwords.verify_password(stored, "Right-Passw0rd!" if i % 2 else "Wrong-Passw0rd!")

    threads = [threading.Thread(target=check, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: bool(i % 2) for i in range(16)}
    assert not clash
    assert 1 <= len(pool.sizes()) <= 2


def test_worker_threads_do_not_each_keep_argon2_memory():
    """The cause of issue 14, end to end in a fresh interpreter: 8 threads checking passwords
    at the default cost through 2 turns leave about 2 buffers resident (18 MiB), not one 9 MiB
    malloc arena per thread (~72 MiB with argon2-cffi's own malloc)."""
    script = textwrap.dedent("""
        import threading
        from people import passwords
        passwords._allowed_at_once = lambda: 2
        stored = passwords.hash_password("Right-Passw0rd!")
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        before = rss()
        def run():
            for _ in range(3):
                assert passwords.verify_password(stored, "Right-Passw0rd!")
        threads = [threading.Thread(target=run) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(rss() - before)
    """)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                         timeout=120, check=True)
    grown_kib = int(out.stdout.strip().splitlines()[-1])
    assert grown_kib < 30 * 1024, f"RSS grew {grown_kib} KiB"


def test_a_pooled_buffer_is_not_lent_again_after_a_failed_run(monkeypatch):
    """A run the library fails (here: a salt too short) may not have wiped what it was given:
    that buffer is unmapped, the next run gets a fresh one."""
    pool = argon2_memory.Pool()
    monkeypatch.setattr(argon2_memory, "pool", pool)
    size = argon2_memory.needed_bytes(64, 1)
    digest = "A" * 43
    assert argon2_memory.verify_password(f"$argon2id$v=19$m=64,t=1,p=1$AAAA${digest}", "pw", pool_size=size) is False
    assert pool.sizes() == []
    good = _cffi(1, 64, 1).hash("pw")
    assert argon2_memory.verify_password(good, "pw", pool_size=size) is True
    assert pool.sizes() == [size]
