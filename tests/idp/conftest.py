"""Fixtures shared by the idp tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def fast(app):
    """The lean path's middleware (``tongban.fastpath.FastPath``), switched on for the test and after it."""
    path = app.extensions["tongban.fastpath"]
    app.config["TONGBAN_FAST_PATH"] = True
    yield path
    app.config["TONGBAN_FAST_PATH"] = True
