"""A prebuilt upsert's compiled form goes with its engine: the memo lives on the dialect, so a
disposed engine (tests build many) is not kept alive by it (review finding)."""

from __future__ import annotations

import gc
import weakref

from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, create_engine, literal_column, select

from tongban.upsert import execute_prebuilt, upsert

_md = MetaData()
_T = Table("memo_rc", _md, Column("key", String, primary_key=True), Column("n", Integer))
_STMT = upsert(create_engine("sqlite://"), _T, {"key": bindparam("b_key", type_=String()), "n": 1}, ["key"],
               {"n": literal_column("memo_rc.n") + 1})


def test_the_compiled_form_is_reused_and_released_with_its_engine():
    dialects = []
    for _ in range(5):
        engine = create_engine("sqlite://")
        _md.create_all(engine)
        with engine.begin() as conn:
            execute_prebuilt(conn, _STMT, {"b_key": "x"})
            execute_prebuilt(conn, _STMT, {"b_key": "x"})  # the same compiled form, run again
            assert conn.execute(select(_T.c.n)).scalar_one() == 2
        assert len(engine.dialect.__dict__["_tongban_prebuilt"]) == 1
        dialects.append(weakref.ref(engine.dialect))
        engine.dispose()
        del engine, conn
    gc.collect()
    assert sum(d() is not None for d in dialects) == 0
