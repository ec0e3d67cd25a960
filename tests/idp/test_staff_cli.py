"""``flask staff create``: an existing account gets the role without a new password; a new one
needs a name and a password; a name that does not match the account's is refused."""

from __future__ import annotations

import json

from sqlalchemy import select

from people.models import StaffRole, User
from people.passwords import verify_password
from tests.conftest import CITIZEN_ID, PASSWORD, USCC
from tongban.extensions import db


def _org(app):
    from people import accounts

    accounts.create_org(USCC, "通办示范科技有限公司", CITIZEN_ID)
    db.session.commit()


def _roles(id_number: str) -> set[str]:
    db.session.expire_all()
    user = db.session.execute(select(User).where(User.id_number == id_number)).scalar_one()
    return set(db.session.execute(select(StaffRole.role).where(StaffRole.user_id == user.id)).scalars())


def test_existing_account_needs_no_password(app, citizen):
    _org(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["staff", "create", "--id-number", CITIZEN_ID, "--org", USCC.lower(),
                                 "--role", "seal-admin", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["role"] == "seal-admin" and body["new_account"] is False and body["org"] == USCC
    assert "seal-admin" in _roles(CITIZEN_ID)
    user = db.session.execute(select(User).where(User.id_number == CITIZEN_ID)).scalar_one()
    assert verify_password(user.password_hash, PASSWORD)  # the account keeps its password
    # again, with the right name: still fine (idempotent)
    again = runner.invoke(args=["staff", "create", "--id-number", CITIZEN_ID, "--name", "张三", "--org", USCC,
                                "--role", "seal-admin"])
    assert again.exit_code == 0, again.output


def test_wrong_name_or_missing_details_are_refused(app, citizen):
    _org(app)
    runner = app.test_cli_runner()
    wrong = runner.invoke(args=["staff", "create", "--id-number", CITIZEN_ID, "--name", "赵六", "--org", USCC,
                                "--role", "clerk"])
    assert wrong.exit_code != 0 and "not 赵六" in wrong.output and len(wrong.output.strip().splitlines()) == 1
    assert "clerk" not in _roles(CITIZEN_ID)
    nobody = "110102198506150023"
    missing = runner.invoke(args=["staff", "create", "--id-number", nobody, "--org", USCC, "--role", "clerk"])
    assert missing.exit_code != 0
    no_password = runner.invoke(args=["staff", "create", "--id-number", nobody, "--name", "赵六", "--org", USCC,
                                      "--role", "clerk"])
    assert no_password.exit_code != 0
    assert db.session.execute(select(User).where(User.id_number == nobody)).scalar_one_or_none() is None
    made = runner.invoke(args=["staff", "create", "--id-number", nobody, "--name", "赵六", "--org", USCC,
                               "--role", "clerk", "--password-stdin"], input="Another-Passw0rd!\n")
    assert made.exit_code == 0, made.output
    assert _roles(nobody) == {"clerk"}
