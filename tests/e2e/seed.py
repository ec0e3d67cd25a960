"""``python -m tests.e2e.seed PORTAL_URL...``: a browser-test instance, migrated and seeded.

In one process (each start of the app costs seconds): ``flask db upgrade``, then
``flask demo seed``'s ``seed()`` against the instance and database the environment
names, then points each demo portal's registration (redirect, post-logout and back-channel
logout URIs) at the free port the tests serve it on instead of the fixed 8081/8082, and
gives the demo citizen a revoked licence too (a 结婚证, so the wallet and the scan page show
both states).
"""

from __future__ import annotations

import sys


def main(urls: list[str]) -> int:
    from demo import PORTALS
    from demo.data import seed
    from idp import clients as registry
    from tongban import create_app
    from tongban.extensions import db

    if len(urls) != len(PORTALS):
        print(f"error: expected {len(PORTALS)} portal URLs, got {len(urls)}", file=sys.stderr)
        return 2
    from flask_migrate import upgrade

    app = create_app()
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory, revision="heads")
        seed()
        for spec, url in zip(PORTALS, urls, strict=True):
            base = url.rstrip("/")
            registry.update_client(spec.client_id, actor="e2e", redirect_uris=[f"{base}/callback"],
                                   post_logout_redirect_uris=[f"{base}/"],
                                   backchannel_logout_uri=f"{base}/backchannel-logout")
        db.session.commit()
        _revoked_licence()
    return 0


REVOKED_REASON = "登记信息有误，予以注销"


def _revoked_licence() -> None:
    from sqlalchemy import select

    from demo.data import CITIZEN
    from licence import services
    from licence.models import Licence
    from tests.licence.samples import SAMPLES
    from tongban.extensions import db

    if db.session.execute(select(Licence.id).where(Licence.holder_id == CITIZEN["id_number"],
                                                   Licence.type_name == "结婚证")).first():
        return
    _holder, fields = SAMPLES["结婚证"]
    lic = services.issue("结婚证", CITIZEN["id_number"], CITIZEN["name"], fields, actor="e2e")
    db.session.commit()
    services.revoke(lic.identifier, REVOKED_REASON, "e2e")
    db.session.commit()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
