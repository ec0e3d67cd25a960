"""Pairwise subject identifiers (OpenID Connect Core §8.1).

A client registered with ``subject_type`` ``pairwise`` sees every person under
``sub = base64url(SHA-256(sector || 0x00 || local sub || 0x00 || salt))``: the same for every
client of one sector (the host of its redirect URIs, or of its ``sector_identifier_uri``),
unrelated across sectors. The salt is a secret of the instance (TONGBAN_PAIRWISE_SALT, by
default a file ``pairwise_salt`` in the instance folder, shared by every server like the KEK).

The pairwise ``sub`` is what the client gets everywhere: ID tokens, userinfo, access tokens and
their introspection, back-channel logout tokens, token exchange. The access token (a JWT the
client can read) carries the person's local ``sub`` only encrypted (``tb_ref``, AES-GCM under a
key derived from the KEK), for the resource servers of this instance.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

from tongban.errors import ValidationError

from . import clients as registry

SUBJECT_TYPES = ("public", "pairwise")
REF_CLAIM = "tb_ref"
SECTOR_MAX_BYTES = 65536  # the largest sector_identifier_uri document read


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _salt() -> bytes:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cached = app.extensions.get("tongban.pairwise_salt")
    if cached is None:
        configured = app.config.get("TONGBAN_PAIRWISE_SALT")
        if isinstance(configured, (bytes, bytearray)) and configured:
            cached = bytes(configured)
        elif isinstance(configured, str) and configured:
            cached = bytes.fromhex(configured)
        else:
            from tongban.config import _secret_file, instance_dir

            cached = _secret_file(instance_dir(app.config), "pairwise_salt", 32)
        app.extensions["tongban.pairwise_salt"] = cached
    return cached


def shared_salt(app) -> bytes:
    """The salt, for the check that every server of the deployment has the same one."""
    with app.app_context():
        return _salt()


def pairwise_sub(sector: str, local_sub: str) -> str:
    data = sector.encode() + b"\x00" + local_sub.encode() + b"\x00" + _salt()
    return _b64(hashlib.sha256(data).digest())


def is_pairwise(client) -> bool:
    return getattr(client, "subject_type", "public") == "pairwise" and bool(getattr(client, "sector", None))


def subject_for(client, local_sub: str) -> str:
    """The ``sub`` ``client`` knows the person ``local_sub`` by."""
    if client is None or not local_sub or not is_pairwise(client):
        return local_sub
    return pairwise_sub(client.sector, local_sub)


def subject_for_client_id(client_id: str | None, local_sub: str) -> str:
    return subject_for(registry.get_client(client_id) if client_id else None, local_sub)


# ---------------------------------------------------------------- the access token's reference


def _aead() -> AESGCM:
    kek = current_app.config["TONGBAN_KEK"]
    return AESGCM(hashlib.sha256(b"tongban pairwise access-token reference\x00" + kek).digest())


def seal_ref(local_sub: str, client_id: str) -> str:
    nonce = os.urandom(12)
    return _b64(nonce + _aead().encrypt(nonce, local_sub.encode(), client_id.encode()))


def open_ref(ref: str, client_id: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(ref + "=" * (-len(ref) % 4))
        return _aead().decrypt(raw[:12], raw[12:], client_id.encode()).decode()
    except (ValueError, TypeError, UnicodeError, InvalidTag):  # not ours, or altered
        return None


def access_token_claims(client, user) -> dict:
    """``sub`` (and the sealed local subject) of an access token for a pairwise client."""
    if user is None or not is_pairwise(client):
        return {}
    return {"sub": subject_for(client, user.sub), REF_CLAIM: seal_ref(user.sub, client.client_id)}


def local_sub(claims: dict) -> str:
    """The person's own ``sub`` behind an access token's claims."""
    ref = claims.get(REF_CLAIM)
    if ref:
        return open_ref(str(ref), str(claims.get("client_id", ""))) or ""
    return claims.get("sub", "")


# ---------------------------------------------------------------- registration


def sector_of(redirect_uris, sector_identifier_uri: str | None) -> str:
    """The sector of a pairwise client: the host of its sector_identifier_uri, else of its redirect
    URIs (which must then share one host, OIDC Core §8.1)."""
    if sector_identifier_uri:
        return (urlsplit(sector_identifier_uri).hostname or "").lower()
    hosts = {(urlsplit(u).hostname or "").lower() for u in redirect_uris}
    if len(hosts) != 1:
        raise ValidationError("a pairwise client whose redirect URIs are on several hosts needs a "
                              "sector_identifier_uri", "invalid_client_metadata")
    return hosts.pop()


def fetch_sector_uris(sector_identifier_uri: str) -> list[str]:
    """GET the sector_identifier_uri (https): a JSON array of redirect URIs. No database
    transaction may be open while this runs (network I/O)."""
    from tongban.fetch import FetchError, fetch_public  # urllib3, imported on first use

    parts = urlsplit(sector_identifier_uri)
    if parts.scheme != "https" and not (parts.scheme == "http" and registry._is_loopback(parts.hostname)):
        raise ValidationError("the sector_identifier_uri must use https", "invalid_client_metadata")
    try:
        resp = fetch_public(sector_identifier_uri, what="the sector_identifier_uri",
                            timeout=float(current_app.config["TONGBAN_SECTOR_FETCH_TIMEOUT"]),
                            max_bytes=SECTOR_MAX_BYTES, headers={"Accept": "application/json"})
    except FetchError as e:
        raise ValidationError(str(e), "invalid_client_metadata") from None
    if resp.status != 200:
        raise ValidationError(f"cannot read the sector_identifier_uri: it answered {resp.status}",
                              "invalid_client_metadata")
    try:
        data = json.loads(resp.body)
    except ValueError:
        raise ValidationError("cannot read the sector_identifier_uri: not JSON", "invalid_client_metadata") from None
    if not isinstance(data, list) or not all(isinstance(u, str) for u in data):
        raise ValidationError("the sector_identifier_uri must hold a JSON array of URIs", "invalid_client_metadata")
    return data


def check_sector(redirect_uris, sector_identifier_uri: str, listed: list[str]) -> None:
    missing = [u for u in redirect_uris if u not in listed]
    if missing:
        raise ValidationError(f"the sector_identifier_uri does not list the redirect URI {missing[0]!r}",
                              "invalid_client_metadata")


__all__ = ["SUBJECT_TYPES", "local_sub", "pairwise_sub", "subject_for", "subject_for_client_id"]
