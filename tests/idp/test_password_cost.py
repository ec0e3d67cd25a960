"""The Argon2id cost of password hashes: configurable, refused below the floor, and a hash made
at another cost is redone at the next successful log-in (old hashes keep verifying)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError
from flask import Flask
from sqlalchemy import select

from people.models import User
from tests.conftest import CITIZEN_ID, PASSWORD
from tests.flask_flows import login
from tongban import config as cfg
from tongban.config import ConfigError
from tongban.extensions import db


def _params(stored: str) -> str:
    return stored.split("$")[3]  # $argon2id$v=19$m=...,t=...,p=...$salt$hash


def _stored() -> str:
    db.session.expire_all()
    return db.session.execute(select(User.password_hash).where(User.id_number == CITIZEN_ID)).scalar_one()


def _loaded(monkeypatch, tmp_path, env: dict) -> Flask:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = Flask("t")
    cfg.load(app, {"TONGBAN_INSTANCE_DIR": str(tmp_path), "SECRET_KEY": "x"})
    return app


def test_new_hashes_use_the_configured_cost(app, citizen):
    assert _params(_stored()) == "m=9216,t=4,p=1"


def test_a_log_in_rehashes_a_hash_made_at_another_cost(app, browser, citizen, monkeypatch):
    from tongban.audit import AuditLog

    # an account hashed before the cost was configurable: argon2-cffi's defaults (t=3, 64 MiB, p=4)
    old = PasswordHasher().hash(PASSWORD)
    user = db.session.execute(select(User).where(User.id_number == CITIZEN_ID)).scalar_one()
    user.password_hash = old
    db.session.commit()
    assert login(browser("en"), password="Wrong-Passw0rd!").status_code == 401
    assert _stored() == old  # a wrong password changes nothing
    assert login(browser("en")).status_code == 302  # the old hash still verifies
    assert _params(_stored()) == "m=9216,t=4,p=1"
    rehashed = db.session.execute(select(AuditLog.detail).where(AuditLog.action == "login.success")).scalar_one()
    assert '"rehashed": true' in rehashed

    # the operator raises the cost: the next log-in stores a hash at the new cost
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_TIME_COST", 3)
    monkeypatch.setitem(app.config, "TONGBAN_ARGON2_MEMORY_KIB", 12288)
    assert login(browser("en")).status_code == 302
    now = _stored()
    assert _params(now) == "m=12288,t=3,p=1"
    assert login(browser("en")).status_code == 302
    assert _stored() == now  # at the current cost already: left alone


def test_a_stored_hash_that_is_not_argon2_never_logs_in(app, browser, citizen):
    user = db.session.execute(select(User).where(User.id_number == CITIZEN_ID)).scalar_one()
    user.password_hash = "$2b$12$notanargon2hashatallxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    db.session.commit()
    with pytest.raises(InvalidHashError):
        PasswordHasher().verify(user.password_hash, PASSWORD)
    assert login(browser("en")).status_code == 401


@pytest.mark.parametrize("env,named", [
    ({"TONGBAN_ARGON2_MEMORY_KIB": "4096"}, "TONGBAN_ARGON2_MEMORY_KIB"),
    ({"TONGBAN_ARGON2_MEMORY_KIB": "8192"}, "TONGBAN_ARGON2_TIME_COST"),  # 4 x 8192 < 5 x 7168
    ({"TONGBAN_ARGON2_TIME_COST": "1"}, "TONGBAN_ARGON2_TIME_COST"),  # 1 x 9216 < 35840
    ({"TONGBAN_ARGON2_TIME_COST": "0"}, "TONGBAN_ARGON2_TIME_COST"),
    ({"TONGBAN_ARGON2_PARALLELISM": "0"}, "TONGBAN_ARGON2_PARALLELISM"),
    ({"TONGBAN_ARGON2_PARALLELISM": "64"}, "TONGBAN_ARGON2_PARALLELISM"),
    ({"TONGBAN_ARGON2_MEMORY_KIB": "99999999"}, "TONGBAN_ARGON2_MEMORY_KIB"),
    ({"TONGBAN_ARGON2_MEMORY_KIB": "lots"}, "TONGBAN_ARGON2_MEMORY_KIB"),
])
def test_a_cost_below_the_floor_is_a_config_error_naming_the_variable(monkeypatch, tmp_path, env, named):
    with pytest.raises(ConfigError) as err:
        _loaded(monkeypatch, tmp_path, env)
    assert str(err.value).startswith(f"{named}=") and "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:  # `make serve` checks before it starts workers
        cfg.check_environment(env)
    assert named in str(err.value)


@pytest.mark.parametrize("t,m,p", [(1, 47104, 1), (2, 19456, 1), (3, 12288, 1), (4, 9216, 1), (5, 7168, 1),
                                   (3, 65536, 4)])
def test_owasp_and_rfc_9106_settings_are_accepted(monkeypatch, tmp_path, t, m, p):
    app = _loaded(monkeypatch, tmp_path, {"TONGBAN_ARGON2_TIME_COST": str(t), "TONGBAN_ARGON2_MEMORY_KIB": str(m),
                                          "TONGBAN_ARGON2_PARALLELISM": str(p)})
    assert (app.config["TONGBAN_ARGON2_TIME_COST"], app.config["TONGBAN_ARGON2_MEMORY_KIB"],
            app.config["TONGBAN_ARGON2_PARALLELISM"]) == (t, m, p)
