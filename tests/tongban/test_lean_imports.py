"""A worker that serves tokens does not carry the libraries only PDFs, seals, SAML or migrations
need (issue 14: RSS of one worker after warm-up ≤ 150 MB; bench/memory.py measures it).

Importing ``wsgi`` (``create_app``) in a fresh interpreter must leave these out of
``sys.modules``; each is imported where it is used, on first use. No timing is measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# what the hot paths (token, introspection, userinfo, JWKS, discovery, log-in, /v/<code>) never need
HEAVY = {
    "pyhanko": "PDF sealing and verification (seal/services.py, keys/pdfsigners.py)",
    "pyhanko_certvalidator": "PDF sealing (keys/pdfsigners.py)",
    "aiohttp": "pyHanko's time-stamping client",
    "reportlab": "seal pictures, licence PDFs, the CJK font (seal/picture.py, licence/pdf.py, tongban/fonts.py)",
    "PIL": "licence cards (licence/card.py), qrcode's images",
    "qrcode": "QR codes (tongban/qr.py)",
    "saml2": "the SAML identity provider (saml/pysaml.py)",
    "xmlschema": "pysaml2's schemas",
    "elementpath": "pysaml2's schemas",
    "lxml": "CAS, SAML and OFD documents",
    "flask_migrate": "`flask db` (tongban/migrating.py)",
    "alembic": "`flask db` (tongban/migrating.py)",
    "mako": "Alembic's templates",
    "pygments": "Mako's",
    "requests": "outbound HTTP: logout deliveries, upstream providers",
    "urllib3": "outbound HTTP: jwks_uri and sector_identifier_uri fetches (tongban/fetch.py), requests",
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("lean")
    env = {**os.environ, "TONGBAN_INSTANCE_DIR": str(tmp / "instance"),
           "DATABASE_URL": f"sqlite:///{tmp / 'tongban.db'}", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("TONGBAN_ISSUER", None)
    code = ("import json, sys, wsgi; "
            "print(json.dumps({'modules': sorted(sys.modules),"
            " 'routes': sorted(r.rule for r in wsgi.app.url_map.iter_rules()),"
            " 'migrate': type(wsgi.app.extensions['migrate']).__module__}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_app_is_whole(loaded):
    # the lazy imports did not drop any package's routes
    for rule in ("/saml/sso", "/saml/metadata", "/seals/verify", "/v/<code>", "/api/v1/seals/verify",
                 "/oauth/token", "/.well-known/openid-configuration"):
        assert rule in loaded["routes"]
    assert loaded["migrate"] == "tongban.migrating"
    for package in ("idp.server", "seal.views", "licence.views", "saml.views", "casserver.views",
                    "federation.views", "rating.views"):
        assert package in loaded["modules"]


@pytest.mark.parametrize("package", sorted(HEAVY))
def test_creating_the_app_does_not_import(loaded, package):
    top_level = {m.split(".")[0] for m in loaded["modules"]}
    assert package not in top_level, f"create_app imports {package}, needed only for {HEAVY[package]}"


def test_licence_layouts_match_the_drawing_code():
    # licence/services.py names them without importing licence/pdf.py (reportlab)
    from licence import pdf, services

    assert tuple(pdf.LAYOUTS) == services.LAYOUT_KINDS
    assert tuple(pdf.PAGES) == services.PAGE_NAMES


def test_saml_constants_are_pysaml2s():
    import saml2
    import saml2.saml
    import saml2.samlp
    import saml2.xmldsig

    from saml import constants, pysaml  # noqa: F401  (pysaml: imported as the first SAML request does)

    for name in ("BINDING_HTTP_POST", "BINDING_HTTP_REDIRECT", "BINDING_SOAP"):
        assert getattr(constants, name) == getattr(saml2, name)
    for module, names in ((saml2.saml, ("NAME_FORMAT_BASIC", "NAMEID_FORMAT_PERSISTENT")),
                          (saml2.samlp, ("STATUS_NO_PASSIVE",)),
                          (saml2.xmldsig, ("DIGEST_SHA256", "SIG_RSA_SHA256"))):
        for name in names:
            assert getattr(constants, name) == getattr(module, name)


def test_the_db_group_is_flask_migrates(app):
    from flask_migrate import _MigrateConfig

    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("upgrade", "downgrade", "current", "history", "-x, --x-arg"):
        assert command in result.output
    group = app.cli.get_command(None, "db")
    assert "upgrade" in group.commands and group.get_command(None, "upgrade") is not None
    # db upgrade bootstraps a new instance (tongban/bootstrap.py patches it when the group loads)
    assert getattr(group.commands["upgrade"].callback, "_tongban", False)
    stand_in = app.extensions["migrate"]
    real = _MigrateConfig(stand_in.migrate, stand_in.db, **stand_in.configure_args)
    assert (stand_in.directory, stand_in.configure_args) == (real.directory, real.configure_args)
    with app.app_context():
        config = stand_in.migrate.get_config()
    assert config.get_main_option("script_location") == stand_in.directory

