"""A cached register, deny list or key ring is never served longer than ``cache.MAX_AGE`` without
being loaded again: a change whose generation bump was lost (Redis unreachable from the writer
for a moment, after its commit) is seen by every process within that bound."""

from __future__ import annotations

import time

from tongban import cache


def test_a_value_older_than_its_max_age_is_loaded_again(app):
    loads = []
    gen = cache.Generation("test-max-age")
    try:
        loader = cache.CachedLoader(gen, lambda: loads.append(1) or len(loads), check_every=30.0, max_age=60.0)
        with app.app_context():
            assert loader.get() == 1
            assert loader.get() == 1  # within check_every: not even the generation is read
            assert loader.fresh(app) == 1 and loader.current(app) == 1
            loader._loaded = time.monotonic() - 61  # as if loaded longer ago than the bound
            assert loader.fresh(app) is None and loader.current(app) is None  # the lean path loads in a context
            assert loader.get() == 2  # the generation did not move, yet it is loaded again
            assert loader.fresh(app) == 2 and loader.current(app) == 2
    finally:
        cache._generations.pop("test-max-age", None)


def test_the_default_bound():
    assert 0 < cache.MAX_AGE <= 60
    from idp import clients, tokens
    from keys import services

    for loader in (clients._register, tokens._denylist, services._ring):
        assert loader.max_age == cache.MAX_AGE
