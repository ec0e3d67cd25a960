"""An upstream's discovery document and JWKS: fetched with a timeout, checked, and reused until
they expire (per process: every server fetches its own copy, nothing is shared but the
upstream's answer). Never called inside a database transaction that writes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from flask import current_app
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .registry import check_issuer

REQUIRED = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
_REFETCH_FLOOR = 10.0  # seconds between two JWKS fetches forced by an unknown kid


class UpstreamUnavailable(Exception):
    """The upstream cannot be used now: unreachable, too slow, or it answered something wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class _Entry:
    value: object
    expires: float
    fetched: float


_cache: dict[tuple[str, str], _Entry] = {}
_lock = threading.Lock()


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _get_json(url: str) -> dict:
    import requests  # imported by the first upstream request, not at start-up

    timeout = float(current_app.config["TONGBAN_FEDERATION_HTTP_TIMEOUT"])
    try:
        resp = requests.get(url, timeout=(min(3.0, timeout), timeout), allow_redirects=False,
                            headers={"Accept": "application/json"})
    except requests.Timeout:
        raise UpstreamUnavailable("timeout", url) from None
    except requests.RequestException as e:
        raise UpstreamUnavailable("unreachable", f"{type(e).__name__}") from None
    if resp.status_code != 200:
        raise UpstreamUnavailable("bad_response", f"HTTP {resp.status_code} from {url}")
    try:
        data = resp.json()
    except ValueError:
        raise UpstreamUnavailable("bad_response", f"not JSON from {url}") from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable("bad_response", f"not a JSON object from {url}")
    return data


def _cached(kind: str, key: str, fetch, *, force: bool = False):
    now = time.monotonic()
    with _lock:
        entry = _cache.get((kind, key))
    if entry is not None and not force and now < entry.expires:
        return entry.value
    if entry is not None and force and now - entry.fetched < _REFETCH_FLOOR:
        return entry.value
    value = fetch()
    ttl = float(current_app.config["TONGBAN_FEDERATION_METADATA_TTL"])
    with _lock:
        _cache[(kind, key)] = _Entry(value, now + ttl, now)
    return value


def discovery(issuer: str) -> dict:
    """The upstream's OpenID Provider Metadata; its ``issuer`` must be exactly the configured one
    (OIDC Discovery §4.3), its endpoints URLs of the same kind as the issuer."""

    def fetch() -> dict:
        doc = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        missing = [k for k in REQUIRED if not isinstance(doc.get(k), str) or not doc.get(k)]
        if missing:
            raise UpstreamUnavailable("bad_discovery", "missing " + ", ".join(missing))
        if doc["issuer"] != issuer:
            raise UpstreamUnavailable("bad_discovery", f"issuer {doc['issuer'][:100]!r} is not {issuer!r}")
        for k in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
            if k in doc:
                try:
                    check_issuer(str(doc[k]).split("?")[0])
                except Exception:
                    raise UpstreamUnavailable("bad_discovery", f"{k} is not a usable URL") from None
        if "code" not in doc.get("response_types_supported", ["code"]):
            raise UpstreamUnavailable("bad_discovery", "the code flow is not supported")
        methods = doc.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise UpstreamUnavailable("bad_discovery", "PKCE S256 is not supported")
        return doc

    return _cached("discovery", issuer, fetch)


def jwks(issuer: str, *, refresh: bool = False) -> KeySet:
    """The upstream's signing keys; ``refresh`` fetches them again (an unknown ``kid``), at most
    once every few seconds whatever strangers send."""
    uri = discovery(issuer)["jwks_uri"]

    def fetch() -> KeySet:
        data = _get_json(uri)
        try:
            keys = [k for k in data.get("keys", []) if isinstance(k, dict) and k.get("use", "sig") == "sig"]
            return KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, TypeError, KeyError):
            raise UpstreamUnavailable("bad_jwks", uri) from None

    return _cached("jwks", uri, fetch, force=refresh)
