"""Redirect and other registered URIs: what the register accepts (RFC 6749 §3.1.2, RFC 8252 §7.3)."""

from __future__ import annotations

from ipaddress import ip_address
from urllib.parse import urlsplit

from .errors import InvalidRedirectUri


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_uri(uri: str, what: str) -> str:
    """https, or http on a loopback host; absolute; no fragment (RFC 6749 §3.1.2)."""
    uri = (uri or "").strip()
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise InvalidRedirectUri(f"{what} must be an absolute http(s) URL: {uri!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise InvalidRedirectUri(f"{what} must use https (http only on loopback hosts): {uri!r}")
    if parts.fragment or "#" in uri:
        raise InvalidRedirectUri(f"{what} must not contain a fragment: {uri!r}")
    if parts.username or parts.password:
        raise InvalidRedirectUri(f"{what} must not contain credentials: {uri!r}")
    return uri
