"""``tongban.extensions.after_commit`` runs at the real commit: not when a savepoint is released
(nothing is committed yet: a cache reloaded then keeps the old rows), and a savepoint rolled back
drops only what was registered inside it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tongban.extensions import after_commit, db


def test_a_released_savepoint_runs_nothing_before_the_commit(app):
    ran = []
    db.session.execute(text("SELECT 1"))
    after_commit(lambda: ran.append("outer"))
    with db.session.begin_nested():
        after_commit(lambda: ran.append("inner"))
    assert ran == []  # released, not committed
    db.session.commit()
    assert ran == ["outer", "inner"]
    db.session.commit()
    assert ran == ["outer", "inner"]  # once


def test_a_savepoint_rolled_back_drops_only_its_own(app):
    ran = []
    db.session.execute(text("SELECT 1"))
    after_commit(lambda: ran.append("before"))
    with pytest.raises(ValueError), db.session.begin_nested():
        after_commit(lambda: ran.append("inside"))
        raise ValueError
    after_commit(lambda: ran.append("after"))
    db.session.commit()
    assert ran == ["before", "after"]


def test_nested_savepoints(app):
    ran = []
    db.session.execute(text("SELECT 1"))
    with db.session.begin_nested():
        after_commit(lambda: ran.append("a"))
        with pytest.raises(ValueError), db.session.begin_nested():
            after_commit(lambda: ran.append("b"))
            raise ValueError
        with db.session.begin_nested():
            after_commit(lambda: ran.append("c"))
    assert ran == []
    db.session.commit()
    assert ran == ["a", "c"]


def test_a_rollback_drops_everything(app):
    ran = []
    db.session.execute(text("SELECT 1"))
    after_commit(lambda: ran.append("x"))
    with db.session.begin_nested():
        after_commit(lambda: ran.append("y"))
    db.session.rollback()
    db.session.commit()
    assert ran == []


def test_one_callback_failing_skips_no_other(app):
    """The transaction is committed: a callback that raises does not skip the ones after it
    (the first error is raised once all ran)."""
    ran = []
    db.session.execute(text("SELECT 1"))
    after_commit(lambda: ran.append("first"))
    after_commit(lambda: 1 / 0)
    after_commit(lambda: ran.append("last"))
    with pytest.raises(ZeroDivisionError):
        db.session.commit()
    assert ran == ["first", "last"]
