from __future__ import annotations

from flask import Blueprint, Response

from tongban.fastpath import LeanResponse, Request
from tongban.security import cacheable

from .services import fresh_keyring, keyring

bp = Blueprint("keys", __name__)


@bp.route("/jwks.json")
def jwks():
    cacheable(300)
    return Response(keyring().jwks_json(), mimetype="application/jwk-set+json")


# ---------------------------------------------------------------- the seal CA, for relying parties


@bp.route("/ca/root.pem")
def ca_root():
    from .ca import root_pem

    cacheable(3600)
    return Response(root_pem(), mimetype="application/x-pem-file")


@bp.route("/ca/crl")
def ca_crl():
    from tongban.extensions import db

    from .ca import crl_der

    body = crl_der("issuing")
    db.session.commit()  # a CRL renewed on the way is kept
    cacheable(60)
    return Response(body, mimetype="application/pkix-crl")


@bp.route("/ca/root.crl")
def ca_root_crl():
    from tongban.extensions import db

    from .ca import crl_der

    body = crl_der("root")
    db.session.commit()
    cacheable(3600)
    return Response(body, mimetype="application/pkix-crl")


@bp.route("/ca/issuing.pem")
def ca_issuing():
    from cryptography.hazmat.primitives import serialization

    from .ca import ca

    cacheable(3600)
    return Response(ca()["issuing"].cert.public_bytes(serialization.Encoding.PEM), mimetype="application/x-pem-file")


@bp.route("/tsa", methods=["POST"])
def tsa():
    from flask import request

    from .tsa import respond_der

    if request.content_length and request.content_length > 64 * 1024:
        return Response("request too large", status=413, mimetype="text/plain")
    return Response(respond_der(request.get_data()), mimetype="application/timestamp-reply")


# ---------------------------------------------------------------- the 国密 (SM2) seal CA


@bp.route("/ca/sm2-root.pem")
def sm2_root():
    from .sm2ca import root_pem

    cacheable(3600)
    return Response(root_pem(), mimetype="application/x-pem-file")


@bp.route("/ca/sm2-issuing.pem")
def sm2_issuing():
    from .sm2ca import issuing_pem

    cacheable(3600)
    return Response(issuing_pem(), mimetype="application/x-pem-file")


@bp.route("/ca/sm2-crl")
def sm2_crl():
    from tongban.extensions import db

    from .sm2ca import crl_der

    body = crl_der("sm2-issuing")
    db.session.commit()
    cacheable(60)
    return Response(body, mimetype="application/pkix-crl")


@bp.route("/ca/sm2-root.crl")
def sm2_root_crl():
    from tongban.extensions import db

    from .sm2ca import crl_der

    body = crl_der("sm2-root")
    db.session.commit()
    cacheable(3600)
    return Response(body, mimetype="application/pkix-crl")


def fast_jwks(req: Request) -> LeanResponse | None:
    """The lean path's JWKS (``tongban.fastpath``): the same cached body as the view."""
    return None if req.query else LeanResponse(keyring().jwks_json().encode())


def quick_jwks(req: Request) -> LeanResponse | None:
    """The same body without an application context, while the key ring is as fresh as
    ``keyring()`` keeps it (its generation read less than a second ago) and the body was
    computed this minute; None otherwise (then ``fast_jwks`` runs and refreshes both)."""
    if req.query or req.app is None:
        return None
    ring = fresh_keyring(req.app)
    body = ring.jwks_bytes_if_current() if ring is not None else None
    return LeanResponse(body) if body is not None else None
