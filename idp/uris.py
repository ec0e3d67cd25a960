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


def _public_address(addr: str) -> bool:
    ip = ip_address(addr.split("%", 1)[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped  # type: ignore[union-attr]
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified)


def check_fetchable(uri: str, what: str) -> None:
    """Before fetching a client-registered URL (its jwks_uri, its sector_identifier_uri): refuse,
    unless TONGBAN_FETCH_ALLOW_PRIVATE, a host that resolves to any private, loopback, link-local,
    multicast, reserved or unspecified address (SSRF). Raises ValueError, for the caller's own error."""
    import socket

    from flask import current_app

    if current_app.config.get("TONGBAN_FETCH_ALLOW_PRIVATE"):
        return
    parts = urlsplit(uri)
    host = parts.hostname
    if not host:
        raise ValueError(f"{what} has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        raise ValueError(f"{what}: the host {host!r} cannot be resolved") from None
    if not infos or not all(_public_address(str(info[4][0])) for info in infos):
        raise ValueError(f"{what}: the host {host!r} is not on a public address")
