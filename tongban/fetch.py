"""Outbound fetches of client-registered URLs (a client's jwks_uri, its sector_identifier_uri) that
DNS rebinding cannot turn into SSRF.

The host is resolved ONCE; every address of the answer must be public (unless
TONGBAN_FETCH_ALLOW_PRIVATE); the TCP connection then goes to one of exactly those addresses,
never to a second resolution. TLS still verifies the certificate against the URL's host name
(SNI and hostname check on the name, not on the address). Imported on first use (urllib3).

What is refused, whatever the spelling of the host (decimal ``2130706433``, octal ``0177.0.0.1``,
hex ``0x7f.1``, ``[::1]``, ``[::ffff:127.0.0.1]``): an address that is not globally routable
(private, loopback, link-local, shared 100.64/10, documentation, benchmarking, multicast,
reserved, unspecified), and an IPv6 address whose embedded IPv4 address is one of those
(IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``); the local-use NAT64
prefix ``64:ff9b:1::/48`` and Teredo are refused outright.

Not used: proxies from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY — a proxy resolves
the name itself, after our check, and may sit inside the network we protect), ``~/.netrc``
credentials, redirects (a 3xx is the answer, never followed), retries, URLs with credentials.
"""

from __future__ import annotations

import functools
import http.client
import io
import os
import socket
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError
from urllib3.util.timeout import Timeout

_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: the last 32 bits are an IPv4 address
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use: translated by the local network's rules
_TEREDO = IPv6Network("2001::/32")

Pinned = tuple[tuple[int, tuple], ...]  # (address family, sockaddr) as getaddrinfo gave them


class FetchError(Exception):
    """The URL could not be fetched; the message names the URL's role, never its answer."""


class FetchRefused(FetchError):
    """The host is not on a public address (or does not resolve): nothing was sent."""


@dataclass
class Fetched:
    status: int
    body: bytes = b""  # only for a 2xx answer
    headers: dict[str, str] = field(default_factory=dict)


def public_address(addr: str | IPv4Address | IPv6Address) -> bool:
    """May a fetch of a client-registered URL connect to this address?"""
    ip = ip_address(addr.split("%", 1)[0]) if isinstance(addr, str) else addr
    if isinstance(ip, IPv6Address):
        if ip in _NAT64_LOCAL or ip in _TEREDO:
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            if not public_address(ip.sixtofour):
                return False
            return ip.is_global  # 2002::/16 itself
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def resolve(host: str, port: int, what: str, *, allow_private: bool) -> Pinned:
    """One resolution of ``host``: the addresses to connect to, every one of them checked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        raise FetchRefused(f"{what}: the host {host!r} cannot be resolved") from None
    pinned: list[tuple[int, tuple]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            ok = allow_private or public_address(str(sockaddr[0]))
        except ValueError:
            ok = False
        if not ok:  # one bad address spoils the answer: no "first public, then private" by order
            raise FetchRefused(f"{what}: the host {host!r} is not on a public address")
        if (family, sockaddr) not in pinned:
            pinned.append((family, tuple(sockaddr)))
    if not pinned:
        raise FetchRefused(f"{what}: the host {host!r} cannot be resolved")
    return tuple(pinned)


def _connect_pinned(conn, pinned: Pinned, deadline: float) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers (no name lookup), all
    attempts together within the fetch's deadline (many black-holed addresses do not add up)."""
    err: OSError | None = None
    for family, sockaddr in pinned:
        left = deadline - time.monotonic()
        if left <= 0:
            err = TimeoutError("out of time")
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for opt in conn.socket_options or ():
                sock.setsockopt(*opt)
            each = conn.timeout if isinstance(conn.timeout, (int, float)) else left
            sock.settimeout(min(each, left))
            sock.connect(sockaddr)
            return sock
        except OSError as e:  # TimeoutError included
            sock.close()
            err = e
    if isinstance(err, TimeoutError):
        raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out")
    raise NewConnectionError(conn, f"failed to connect to {conn.host}: {err}")


class _Deadline:
    """When the whole fetch must be over (``time.monotonic()``), the read timeout, and whether a
    read of the answer was cut short by the deadline (then the fetch was "too slow")."""

    __slots__ = ("at", "hit", "read_timeout")

    def __init__(self, at: float, read_timeout: float):
        self.at, self.read_timeout, self.hit = at, read_timeout, False


class _DeadlineReader(io.RawIOBase):
    """The socket reader of an answer (its status line, headers and body all come through it):
    before each recv the socket waits at most the read timeout and never past the fetch's
    deadline. A deadline checked only between ``read()`` calls is not enough: http.client's
    buffered reads loop on recv until they have what they asked for, so ``read(8192)`` of a body
    dripped one byte a second returns after 8192 recvs, each within the read timeout (and a
    status line or header dripped the same way holds ``readline`` as long)."""

    def __init__(self, sock: socket.socket, deadline: _Deadline):
        super().__init__()
        self._sock, self._deadline = sock, deadline
        self._raw = sock.makefile("rb", buffering=0)  # socket.SocketIO: the socket's reference count

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def readinto(self, b) -> int | None:
        d = self._deadline
        left = d.at - time.monotonic()
        if left <= 0:
            d.hit = True
            raise TimeoutError("the fetch's deadline has passed")
        cut = left < d.read_timeout
        self._sock.settimeout(d.read_timeout if not cut else left)
        try:
            return self._raw.readinto(b)
        except TimeoutError:
            d.hit = d.hit or cut
            raise

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response reading through a _DeadlineReader (urllib3 wraps it as usual)."""

    def __init__(self, sock, *args, deadline: _Deadline, **kwargs):
        super().__init__(sock, *args, **kwargs)
        plain, self.fp = self.fp, io.BufferedReader(_DeadlineReader(sock, deadline))
        plain.close()  # the reader http.client made, never read from


class _PinnedHTTPConnection(HTTPConnection):
    def __init__(self, *args, pinned: Pinned = (), deadline: _Deadline, **kwargs):
        self._pinned, self._deadline = pinned, deadline
        super().__init__(*args, **kwargs)
        self.response_class = functools.partial(_DeadlineResponse, deadline=self._deadline)  # type: ignore[assignment]

    def _new_conn(self) -> socket.socket:
        return _connect_pinned(self, self._pinned, self._deadline.at)


class _PinnedHTTPSConnection(HTTPSConnection):
    """TLS over a socket to a checked address; SNI and the certificate check use ``self.host``,
    the URL's host name (urllib3's HTTPSConnection.connect wraps what ``_new_conn`` returns)."""

    def __init__(self, *args, pinned: Pinned = (), deadline: _Deadline, **kwargs):
        self._pinned, self._deadline = pinned, deadline
        super().__init__(*args, **kwargs)
        self.response_class = functools.partial(_DeadlineResponse, deadline=self._deadline)  # type: ignore[assignment]

    def _new_conn(self) -> socket.socket:
        return _connect_pinned(self, self._pinned, self._deadline.at)


class _PinnedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


def _ca_bundle() -> str:
    """The CA certificates requests would trust: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's."""
    import certifi

    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


def fetch_public(url: str, *, what: str, timeout: float, max_bytes: int, headers: dict[str, str] | None = None,
                 allow_private: bool | None = None, ca_certs: str | None = None,
                 total_timeout: float | None = None) -> Fetched:
    """GET ``url`` (http or https), connecting only to an address of one checked resolution of its
    host. ``allow_private`` (default: TONGBAN_FETCH_ALLOW_PRIVATE) lifts the address check, not
    the pinning. Each connect and each read waits at most ``timeout`` seconds, the whole fetch at
    most ``total_timeout`` (default: twice ``timeout``), a server sending its answer a byte at a
    time included ("too slow"); a 2xx body over ``max_bytes`` is refused. Raises FetchRefused
    before any connection, FetchError after."""
    if allow_private is None:
        from flask import current_app

        allow_private = bool(current_app.config.get("TONGBAN_FETCH_ALLOW_PRIVATE"))
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchRefused(f"{what} is not a usable URL") from None
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"{what} must be an http(s) URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise FetchRefused(f"{what} must not contain credentials")
    host = parts.hostname
    if not host:
        raise FetchRefused(f"{what} has no host")
    try:
        host.encode("ascii")
    except UnicodeError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise FetchRefused(f"{what}: the host {host!r} is not a valid name") from None
    pinned = resolve(host, port, what, allow_private=allow_private)

    pool_cls = _PinnedHTTPSPool if parts.scheme == "https" else _PinnedHTTPPool
    tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs or _ca_bundle()} if parts.scheme == "https" else {}
    deadline = _Deadline(time.monotonic() + (2 * timeout if total_timeout is None else total_timeout), timeout)
    pool = pool_cls(host, port, timeout=Timeout(connect=timeout, read=timeout), maxsize=1, retries=False,
                    pinned=pinned, deadline=deadline, **tls)  # type: ignore[arg-type]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        resp = pool.urlopen("GET", target, headers={"Accept-Encoding": "identity", **(headers or {})},
                            redirect=False, retries=False, preload_content=False, assert_same_host=False)
        try:
            out = Fetched(resp.status, b"", dict(resp.headers))
            if not 200 <= resp.status < 300:
                return out
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{what} document is too large")
            body = bytearray()
            while True:
                chunk = resp.read(8192)
                if not chunk:
                    break
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"{what} document is too large")
                if time.monotonic() > deadline.at:
                    raise FetchError(f"{what} could not be fetched: too slow")
            out.body = bytes(body)
            return out
        finally:
            resp.release_conn()
            resp.close()
    except (HTTPError, OSError) as e:
        # a read cut short by the deadline surfaces as urllib3's ReadTimeoutError: named for what it is
        reason = "too slow" if deadline.hit else type(e).__name__
        raise FetchError(f"{what} could not be fetched: {reason}") from None
    finally:
        pool.close()
