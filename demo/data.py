"""``flask demo seed``: the demo data ``make run`` serves (idempotent).

The demo package may use every domain package; nothing but the app factory imports it."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select

from tongban.bootstrap import bootstrap
from tongban.cli import command_errors
from tongban.clock import digest, token
from tongban.extensions import db

DEMO_PASSWORD = "Demo-Passw0rd!"
CITIZEN = {"id_number": "11010519491231002X", "name": "张三", "phone": "13800138000"}
CITIZEN2 = {"id_number": "110105198001010016", "name": "王五", "phone": "13900139000"}
SEAL_OFFICER = {"id_number": "110102198506150023", "name": "赵六", "phone": "13600136000"}
ENTERPRISE = {"uscc": "91350100M000100Y43", "name": "通办示范科技有限公司", "contact_phone": "13700137000"}
DEMO_CLIENT_ID = "demo-portal"
POPULATION = [
    (CITIZEN["id_number"], CITIZEN["name"]),
    (CITIZEN2["id_number"], CITIZEN2["name"]),
    ("110101199003071233", "李四"),
    (SEAL_OFFICER["id_number"], SEAL_OFFICER["name"]),
]

demo_cli = AppGroup("demo", help="Demo data.")


def _demo_secret() -> str:
    """The demo client's secret, kept in the instance folder so every run can print it."""
    path = Path(current_app.config["TONGBAN_INSTANCE_DIR"]) / "demo_client_secret"
    if not path.exists():
        path.write_text(token(32))
        path.chmod(0o600)
    return path.read_text().strip()


def seed() -> dict:
    from idp import clients as registry
    from idp.models import Client
    from people import accounts
    from people.models import PopulationRecord, User

    bootstrap()
    for id_number, name in POPULATION:
        if db.session.get(PopulationRecord, id_number) is None:
            db.session.add(PopulationRecord(id_number=id_number, name=name))
    db.session.flush()

    def user(spec):
        u = db.session.execute(select(User).where(User.id_number == spec["id_number"])).scalar_one_or_none()
        if u is None:
            u = accounts.create_user(spec["id_number"], spec["name"], DEMO_PASSWORD, spec["phone"],
                                     actor="demo")
            accounts.verify_identity(u)
        return u

    citizen = user(CITIZEN)
    clerk = user(CITIZEN2)
    cfg = current_app.config
    authority = accounts.ensure_org(cfg["TONGBAN_AUTHORITY_USCC"], cfg["TONGBAN_AUTHORITY_NAME"])
    accounts.add_role(clerk, authority, "clerk", actor="demo")
    accounts.add_role(clerk, authority, "admin", actor="demo")
    officer = user(SEAL_OFFICER)  # the enterprise's seal officer (印章管理员): /seals/console
    if db.session.execute(select(accounts.Organisation).where(
            accounts.Organisation.uscc == ENTERPRISE["uscc"])).scalar_one_or_none() is None:
        accounts.create_org(ENTERPRISE["uscc"], ENTERPRISE["name"], citizen.id_number, actor="demo")
    from people.enterprise import add_register_record  # the local legal person register

    add_register_record(ENTERPRISE["uscc"], ENTERPRISE["name"], CITIZEN["id_number"], CITIZEN["name"],
                        ENTERPRISE["contact_phone"])

    secret = _demo_secret()
    row = db.session.execute(select(Client).where(Client.client_id == DEMO_CLIENT_ID)).scalar_one_or_none()
    if row is None:
        iss = cfg["TONGBAN_ISSUER"]
        row, _ = registry.create_client(
            client_id=DEMO_CLIENT_ID, name="示范办事门户", department="市政务服务和数据管理局",
            redirect_uris=["http://127.0.0.1:8080/callback", "http://localhost:8080/callback"],
            post_logout_redirect_uris=["http://127.0.0.1:8080/", "http://localhost:8080/"],
            grant_types=["authorization_code", "refresh_token", "client_credentials"],
            scopes=["openid", "profile", "phone", "offline_access"], function="演示：网上办事门户",
            scope_of_use="全市", approver="市政务服务和数据管理局", funding_source="财政拨款",
            contact=f"{iss}/", actor="demo")
    row.secret_hash = digest(secret)
    from .seed import register_portals  # the two demo department portals `make run` serves

    portals = register_portals(Path(cfg["TONGBAN_INSTANCE_DIR"]))
    documents = _seed_documents()
    enterprise = db.session.execute(select(accounts.Organisation).where(
        accounts.Organisation.uscc == ENTERPRISE["uscc"])).scalar_one()
    accounts.add_role(officer, enterprise, "seal-admin", actor="demo")
    from rating.demo import seed_demo  # 好差评: rated services, so the dashboard shows real figures

    seed_demo(citizen, clerk)
    db.session.commit()
    return {"documents": documents, "citizen": CITIZEN, "clerk": CITIZEN2, "seal_officer": SEAL_OFFICER,
            "password": DEMO_PASSWORD,
            "enterprise": ENTERPRISE, "client_id": DEMO_CLIENT_ID, "client_secret": secret, "portals": portals}


def _seed_documents() -> list[str]:
    """The enterprise's official seal and a few e-licences (each only once)."""
    from licence import services as licences
    from licence.models import Licence
    from people.models import Organisation
    from seal import services as seals
    from seal.models import Seal

    org = db.session.execute(select(Organisation).where(Organisation.uscc == ENTERPRISE["uscc"])).scalar_one()
    if db.session.execute(select(Seal.id).where(Seal.org_id == org.id)).first() is None:
        seals.create_seal(ENTERPRISE["uscc"], ENTERPRISE["name"], "official", actor="demo")
    issued = []
    samples = [
        ("营业执照", ENTERPRISE["uscc"], ENTERPRISE["name"], {
            "entity_type": "有限责任公司", "legal_rep": CITIZEN["name"], "capital": "壹仟万元整",
            "established": "2019-06-18", "term": "长期", "domicile": "通办市高新区创新大道88号",
            "business_scope": "软件开发；信息技术咨询服务；数据处理和存储支持服务"}),
        ("社会保障卡", CITIZEN["id_number"], CITIZEN["name"], {
            "gender": "女", "birth_date": "1949-12-31", "card_no": "A12345678", "bank": "中国工商银行"}),
    ]
    for type_name, holder_id, holder_name, fields in samples:
        exists = db.session.execute(select(Licence.id).where(
            Licence.holder_id == holder_id, Licence.type_name == type_name)).first()
        if exists is None:
            issued.append(licences.issue(type_name, holder_id, holder_name, fields, actor="demo").identifier)
    return issued


@demo_cli.command("seed")
@command_errors
def seed_cmd():
    """Seed the demo citizen, enterprise, clerk and client system; print the log-ins."""
    info = seed()
    iss = current_app.config["TONGBAN_ISSUER"]
    click.echo(f"""
Tongban demo ({iss})
  citizen      {info['citizen']['name']}  ID {info['citizen']['id_number']}  phone {info['citizen']['phone']}
  window clerk {info['clerk']['name']}  ID {info['clerk']['id_number']}
  seal officer {info['seal_officer']['name']}  ID {info['seal_officer']['id_number']}  of {info['enterprise']['name']}
  password     {info['password']}   (all three accounts)
  enterprise   {info['enterprise']['name']}  USCC {info['enterprise']['uscc']}
  demo system  client_id {info['client_id']}  client_secret {info['client_secret']}
               redirect URI http://127.0.0.1:8080/callback
  e-licences   社会保障卡 for {info['citizen']['name']}, 营业执照 for the enterprise: log in, open {iss}/wallet
  clerk desk   {iss}/clerk (log in as the window clerk)   verify a PDF: {iss}/seals/verify
  seal console {iss}/seals/console (log in as the seal officer: seal a PDF over the signature and date)
  好差评        public figures {iss}/ratings   supervision {iss}/admin/ratings (clerk)   rate: {iss}/ratings/mine
  discovery    {iss}/.well-known/openid-configuration
""")
    for p in info.get("portals", []):
        click.echo(f"  demo portal  {p['name']}  {p['url']}")


def init_app(app: Flask) -> None:
    if "demo" not in app.cli.commands:
        app.cli.add_command(demo_cli)
