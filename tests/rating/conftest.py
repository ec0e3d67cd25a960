"""好差评 fixtures: a department with a clerk, a registered system, events and logged-in browsers."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD
from tests.flask_flows import basic, login

DEPT = "11330800MB19572704"  # 市市场监督管理局
DEPT_NAME = "市市场监督管理局"
OTHER_DEPT = "11330800MB19572717"
CLERK_ID = "330802198501010012"
OTHER_CLERK_ID = "330802198501010020"


@pytest.fixture
def dept_clerk(app):
    from people import accounts
    from tongban.extensions import db

    accounts.create_org(DEPT, DEPT_NAME)
    accounts.create_org(OTHER_DEPT, "市人力资源和社会保障局")
    clerk = accounts.create_staff(CLERK_ID, "赵六", PASSWORD, DEPT, "clerk")
    other = accounts.create_staff(OTHER_CLERK_ID, "钱七", PASSWORD, OTHER_DEPT, "clerk")
    db.session.commit()
    return clerk, other


@pytest.fixture
def supervisor(app):
    """An administrator of the operating authority (decides appeals, sees the dashboard)."""
    from people import accounts
    from tongban.extensions import db

    user = accounts.create_staff("330802199001010037", "孙八", PASSWORD, app.config["TONGBAN_AUTHORITY_USCC"],
                                 "admin")
    db.session.commit()
    return user


@pytest.fixture
def system(client, make_client):
    """A department system allowed to register events: (client_id, secret, bearer headers)."""
    cid, secret = make_client(name="市场监管审批系统", department=DEPT_NAME, scopes=["rating:write"],
                              grant_types=["client_credentials"])
    return cid, secret, bearer(client, cid, secret, "rating:write")


def bearer(client, cid: str, secret: str, scope: str) -> dict:
    r = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": scope},
                    headers=basic(cid, secret))
    assert r.status_code == 200, r.json
    return {"Authorization": f"Bearer {r.json['access_token']}"}


@pytest.fixture
def new_event(app):
    """new_event(**overrides) -> services.NewEvent (committed), registered as the test system would."""
    from rating import services
    from tongban.extensions import db

    def _make(**kw):
        kw.setdefault("client_id", "test-system")
        kw.setdefault("department_name", DEPT_NAME)
        kw.setdefault("department_code", DEPT)
        kw.setdefault("service_item_code", "330800-QT-001")
        kw.setdefault("service_item_name", "食品经营许可证核发")
        kw.setdefault("channel", "window")
        new = services.register_event(**kw)
        db.session.commit()
        return new

    return _make


@pytest.fixture
def logged_in(browser):
    def _make(who: str):
        b = browser()
        r = login(b, who)
        assert r.status_code in (302, 303), r.get_data(as_text=True)[:300]
        return b

    return _make
