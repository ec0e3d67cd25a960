"""Two small demo department portals that log in with Tongban (the newcomer's tour of
single sign-on and logging out everywhere). ``make run`` serves them next to the provider."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortalSpec:
    key: str
    client_id: str
    name: str  # shown as the portal's title (data, like any system name in the register)
    department: str
    port: int
    cookie: str  # distinct cookie names: the portals share the host ``localhost``

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"


PORTALS = (
    PortalSpec("housing-fund", "demo-housing-fund", "住房公积金网上服务大厅", "市住房公积金管理中心", 8081,
               "demo_housing_fund"),
    PortalSpec("social-security", "demo-social-security", "社会保障网上服务平台", "市人力资源和社会保障局", 8082,
               "demo_social_security"),
)


def init_app(app) -> None:
    """The app factory's hook: ``flask --app wsgi demo seed`` (demo/data.py)."""
    from .data import init_app as register_cli

    register_cli(app)
