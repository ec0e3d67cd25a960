"""Fetches of client-registered URLs (jwks_uri, sector_identifier_uri) against SSRF by DNS
rebinding (tongban/fetch.py, docs/sessions-and-security.md).

A fake DNS (socket.getaddrinfo patched: each lookup of a test name gets the next answer) and a
fake internet (socket.socket.connect patched: the "public" address PUBLIC:port is routed to a
local server) let a name answer a public address to the first lookup and 127.0.0.1 to the next,
as a rebinding attacker's DNS with TTL 0 does. The internal service is a local server on
127.0.0.1: the assertions are on what it received (nothing), not on timings.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tongban import fetch
from tongban.fetch import FetchError, FetchRefused, fetch_public

PUBLIC = "93.184.216.34"  # a global address; never really connected to (routed to a local server)
DOC = {"keys": []}


class Server:
    """A local HTTP(S) server that counts what it receives.

    ``slow`` makes it a slow server (after the request): ``"body"`` sends the headers of a
    10,000-byte body, then one byte of it every ``gap`` seconds; ``"headers"`` sends the status
    line, then a header one byte every ``gap`` seconds; ``"stall"`` sends the headers, then
    nothing until the client goes away. A dripping handler sends at most ``drip_bytes`` bytes,
    then closes (with an unbounded client that is a failure, never a hang), and stops at its next
    byte once the client is gone (the write fails). ``close`` ends every handler (it shuts their
    connections down) and joins every thread the server started."""

    def __init__(self, *, body: bytes | None = None, status: int = 200, headers: dict | None = None,
                 tls: ssl.SSLContext | None = None, content_length: bool = True, slow: str | None = None,
                 gap: float = 0.02, drip_bytes: int = 500):
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        self.sni: list[str | None] = []
        self.handlers: list[threading.Thread] = []
        self.connections: list[socket.socket] = []
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def drip(self, byte: bytes) -> None:
                """One byte every ``gap`` seconds until the budget, the client or the server ends."""
                for _ in range(drip_bytes):
                    if outer.stop.wait(gap):
                        return
                    try:
                        self.wfile.write(byte)
                    except OSError:  # the client went away
                        return

            def do_GET(self):
                outer.hits.append((self.path, self.headers.get("Host", "")))
                if slow == "headers":
                    self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                    self.drip(b"a")
                    return
                data = json.dumps(DOC).encode() if body is None else body
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if slow:
                    self.send_header("Content-Length", "10000")
                elif content_length:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if slow == "body":
                    self.drip(b" ")
                elif slow == "stall":
                    with contextlib.suppress(OSError):  # the client reset the connection
                        self.rfile.read(1)  # b"" when the client closes (or close() shuts the connection)
                else:
                    self.wfile.write(data)

            def log_message(self, *a):
                pass

        class Httpd(ThreadingHTTPServer):
            def process_request(self, request, client_address):
                """As ThreadingMixIn's, the connection and its thread recorded for close()."""
                t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                     daemon=True)
                outer.connections.append(request)
                outer.handlers.append(t)
                t.start()

        self.httpd = Httpd(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: outer.sni.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_port
        # a short poll: shutdown() waits for the loop to notice, up to one interval per server
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def idle(self, timeout: float = 10.0) -> bool:
        """Have all the handlers ended (waiting up to ``timeout`` seconds for them)?"""
        for t in list(self.handlers):
            t.join(timeout)
        return not any(t.is_alive() for t in self.handlers)

    def close(self) -> bool:
        """Stop accepting, end every handler, close; did every thread of this server end?"""
        self.stop.set()
        self.httpd.shutdown()  # no connection is accepted after this
        for conn in list(self.connections):
            with contextlib.suppress(OSError):  # the handler closed it already
                conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked on it; its writes fail
        self.httpd.server_close()
        self.thread.join(10)
        return self.idle() and not self.thread.is_alive()


class Net:
    """The fake DNS and the fake internet."""

    def __init__(self, monkeypatch):
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self.routes: dict[tuple[str, int], tuple[str, int]] = {}
        self.connects: list[tuple[str, int]] = []
        self.blackhole: set[str] = set()  # addresses whose connect times out
        real_getaddrinfo = socket.getaddrinfo
        real_connect = socket.socket.connect

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            name = host.decode() if isinstance(host, bytes) else host
            if name not in self.answers:
                return real_getaddrinfo(host, port, family, type, proto, flags)
            self.lookups.append(name)
            queue = self.answers[name]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            out = []
            for addr in answer:
                if ":" in addr:
                    out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, int(port), 0, 0)))
                else:
                    out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port))))
            return out

        def connect(sock, address):
            key = (address[0], address[1])
            self.connects.append(key)
            if address[0] in self.blackhole:
                time.sleep(sock.gettimeout() or 0)
                raise TimeoutError("timed out")
            if key in self.routes:
                return real_connect(sock, self.routes[key])
            if address[0] == PUBLIC:
                raise ConnectionRefusedError("no such host on the fake internet")
            return real_connect(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def net(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return Net(monkeypatch)


@pytest.fixture
def servers():
    made: list[Server] = []

    def make(**kw) -> Server:
        made.append(Server(**kw))
        return made[-1]

    yield make
    ended = [s.close() for s in made]
    assert all(ended), "a test server's thread outlived its test"


# ---------------------------------------------------------------- a self-made CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for keys.rp.example, signed by it (files in a temp dir)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test fetch CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keys.rp.example")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("keys.rp.example")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem = serialization.Encoding.PEM
    (d / "cert.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d


def _tls(pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "cert.pem", pki / "key.pem")
    return ctx


# ---------------------------------------------------------------- DNS rebinding


def test_the_fake_dns_does_rebind_a_check_then_connect_fetch(net, servers):
    """The attack the helper defeats, shown on the way it was done before (check the resolved
    addresses, then let requests resolve the name again): the internal server is reached. This
    proves the fake resolver of the tests below really rebinds."""
    internal = servers()
    net.answers["keys.rebind.example"] = [[PUBLIC], ["127.0.0.1"]]
    url = f"http://keys.rebind.example:{internal.port}/jwks.json"
    fetch.resolve("keys.rebind.example", internal.port, "jwks_uri", allow_private=False)  # the check passes
    with requests.Session() as s:
        s.trust_env = False
        assert s.get(url, timeout=5, allow_redirects=False).status_code == 200
    assert len(internal.hits) == 1  # SSRF


def test_rebinding_to_loopback_reaches_nothing_internal(net, servers):
    """Public address to the first lookup, 127.0.0.1 to the next: the fetch connects to the
    public address of its one lookup; the server on 127.0.0.1 receives no request."""
    internal = servers()
    public = servers(body=b'{"keys": []}')
    net.answers["keys.rebind.example"] = [[PUBLIC], ["127.0.0.1"]]
    net.routes[(PUBLIC, internal.port)] = ("127.0.0.1", public.port)
    got = fetch_public(f"http://keys.rebind.example:{internal.port}/jwks.json", what="jwks_uri", timeout=5,
                       max_bytes=65536, allow_private=False)
    assert got.status == 200 and json.loads(got.body) == {"keys": []}
    assert internal.hits == [] and len(public.hits) == 1
    assert net.lookups == ["keys.rebind.example"]  # resolved once
    assert net.connects == [(PUBLIC, internal.port)]
    assert public.hits[0][1] == f"keys.rebind.example:{internal.port}"  # the Host header is the name


def test_rebinding_when_the_public_address_is_down_still_never_falls_back(net, servers):
    """The public address refuses the connection: the fetch fails; no second lookup, no loopback."""
    internal = servers()
    net.answers["keys.rebind.example"] = [[PUBLIC], ["127.0.0.1"], ["169.254.169.254"]]
    with pytest.raises(FetchError, match="could not be fetched"):
        fetch_public(f"http://keys.rebind.example:{internal.port}/", what="jwks_uri", timeout=5, max_bytes=100,
                     allow_private=False)
    assert internal.hits == [] and net.lookups == ["keys.rebind.example"]
    assert {c[0] for c in net.connects} == {PUBLIC}


def test_an_answer_with_one_private_address_is_refused_whatever_its_order(net, servers):
    internal = servers()
    for answer in ([PUBLIC, "127.0.0.1"], ["127.0.0.1", PUBLIC], [PUBLIC, "::ffff:10.0.0.1"], [PUBLIC, "::1"]):
        net.answers["mixed.rp.example"] = [answer]
        with pytest.raises(FetchRefused, match="public address"):
            fetch_public(f"http://mixed.rp.example:{internal.port}/", what="jwks_uri", timeout=5, max_bytes=100,
                         allow_private=False)
    assert internal.hits == [] and net.connects == []


def test_allow_private_still_pins_the_one_resolution(net, servers):
    """TONGBAN_FETCH_ALLOW_PRIVATE lifts the address check, not the pinning: a second lookup
    (here rebinding to another address) is never made."""
    first = servers()
    other = servers()
    net.answers["keys.lan.example"] = [["127.0.0.1"], [PUBLIC]]
    net.routes[(PUBLIC, first.port)] = ("127.0.0.1", other.port)
    got = fetch_public(f"http://keys.lan.example:{first.port}/k", what="jwks_uri", timeout=5, max_bytes=1000,
                       allow_private=True)
    assert got.status == 200 and len(first.hits) == 1 and other.hits == []
    assert net.lookups == ["keys.lan.example"]


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001", "[::1]",
                                  "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "0.0.0.0", "0", "localhost",
                                  "[0:0:0:0:0:ffff:127.0.0.1]", "127.0.0.1.", "[::]"])
def test_loopback_spellings_are_refused(net, servers, host):
    internal = servers()
    with pytest.raises(FetchRefused, match=r"public address|cannot be resolved"):
        fetch_public(f"http://{host}:{internal.port}/", what="jwks_uri", timeout=5, max_bytes=100,
                     allow_private=False)
    assert internal.hits == [] and net.connects == []


@pytest.mark.parametrize("addr,public", [
    ("8.8.8.8", True), ("2606:4700::1111", True), ("::ffff:8.8.8.8", True),
    ("64:ff9b::808:808", True),  # NAT64 of a public address (DNS64 networks)
    ("2002:808:808::1", True),  # 6to4 of a public address
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("255.255.255.255", False),
    ("224.0.0.1", False), ("240.0.0.1", False), ("192.0.2.1", False), ("198.18.0.1", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fe80::1%eth0", False), ("fd00:ec2::254", False),
    ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("::7f00:1", False),
    ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::a00:1", False),
    ("64:ff9b:1::808:808", False),  # local-use NAT64: whatever the local translator makes of it
    ("2002:7f00:1::", False), ("2002:a9fe:a9fe::", False),  # 6to4 of loopback / the metadata service
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
])
def test_which_addresses_are_public(addr, public):
    assert fetch.public_address(addr) is public


def test_credentials_and_odd_schemes_are_refused_before_any_lookup(net):
    net.answers["keys.rp.example"] = [[PUBLIC]]
    for url in ("https://user:pw@keys.rp.example/jwks.json", "https://user@keys.rp.example/jwks.json",
                "https://keys.rp.example@127.0.0.1/jwks.json", "ftp://keys.rp.example/jwks.json",
                "file:///etc/passwd", "https://keys.rp.example:99999/", "https:///jwks.json"):
        with pytest.raises(FetchRefused):
            fetch_public(url, what="jwks_uri", timeout=5, max_bytes=100, allow_private=False)
    assert net.lookups == [] and net.connects == []


def test_redirects_are_answers_never_followed(net, servers):
    internal = servers()
    public = servers(status=302, body=b"", headers={"Location": f"http://127.0.0.1:{internal.port}/"})
    net.answers["keys.rp.example"] = [[PUBLIC]]
    net.routes[(PUBLIC, 8080)] = ("127.0.0.1", public.port)
    got = fetch_public("http://keys.rp.example:8080/jwks.json", what="jwks_uri", timeout=5, max_bytes=100,
                       allow_private=False)
    assert got.status == 302 and got.body == b"" and internal.hits == []


def test_proxies_from_the_environment_are_not_used(net, servers, monkeypatch):
    """A proxy would resolve the name itself, after the check: the fetch goes direct."""
    proxy = servers()
    public = servers()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
    net.answers["keys.rp.example"] = [[PUBLIC]]
    net.routes[(PUBLIC, 8080)] = ("127.0.0.1", public.port)
    got = fetch_public("http://keys.rp.example:8080/jwks.json", what="jwks_uri", timeout=5, max_bytes=1000,
                       allow_private=False)
    assert got.status == 200 and proxy.hits == [] and public.hits == [("/jwks.json", "keys.rp.example:8080")]


def test_a_body_over_max_bytes_is_refused(net, servers):
    """By its Content-Length before reading; without one (a body read to the close), as it arrives."""
    declared = servers(body=b"x" * 5000)
    undeclared = servers(body=b"x" * 5000, content_length=False)
    fits = servers(body=b"x" * 4096, content_length=False)
    net.answers["big.rp.example"] = [[PUBLIC]]
    for port, server in enumerate((declared, undeclared, fits), 1):
        net.routes[(PUBLIC, port)] = ("127.0.0.1", server.port)
    for port in (1, 2):
        with pytest.raises(FetchError, match="too large"):
            fetch_public(f"http://big.rp.example:{port}/", what="jwks_uri", timeout=5, max_bytes=4096,
                         allow_private=False)
    got = fetch_public("http://big.rp.example:3/", what="jwks_uri", timeout=5, max_bytes=4096, allow_private=False)
    assert got.body == b"x" * 4096
    assert len(declared.hits) == len(undeclared.hits) == len(fits.hits) == 1


@pytest.mark.parametrize("slow,tls", [("body", False), ("headers", False), ("stall", False), ("body", True)],
                         ids=["body", "headers", "stall", "body-tls"])
def test_a_slow_server_is_cut_off_at_the_deadline(net, servers, pki, slow, tls):
    """Bytes 20 ms apart (or none at all) against a 10 s read timeout and a 1 s deadline for the
    whole fetch: refused as too slow, at the deadline, never as a read timeout however loaded the
    machine (a gap would have to reach 10 s). The deadline holds inside a read: http.client's
    buffered reads loop on recv until they have what they asked for, so a deadline checked only
    between reads let a body dripped byte by byte hold ``read(8192)`` for 8192 gaps (minutes), a
    dripped header hold ``readline`` as long, and a silent server hold a read for the whole read
    timeout. The fetch closes its connection: the server's handler ends (the next write fails, or
    the read sees the close)."""
    server = servers(slow=slow, tls=_tls(pki) if tls else None)
    net.answers["keys.rp.example"] = [[PUBLIC]]
    net.routes[(PUBLIC, 8443)] = ("127.0.0.1", server.port)
    url = f"{'https' if tls else 'http'}://keys.rp.example:8443/jwks.json"
    with pytest.raises(FetchError, match="could not be fetched: too slow"):
        fetch_public(url, what="jwks_uri", timeout=10, total_timeout=1, max_bytes=65536, allow_private=False,
                     ca_certs=str(pki / "ca.pem"))
    assert len(server.hits) == 1
    assert server.idle(), "the server is still sending to a fetch that gave up"


def test_a_silent_server_is_cut_off_at_the_read_timeout(net, servers):
    """The deadline far away, a server that stops sending: refused at the read timeout (the reason
    named as such, not "too slow")."""
    server = servers(slow="stall")
    net.answers["keys.rp.example"] = [[PUBLIC]]
    net.routes[(PUBLIC, 8080)] = ("127.0.0.1", server.port)
    with pytest.raises(FetchError, match="could not be fetched: ReadTimeoutError"):
        fetch_public("http://keys.rp.example:8080/", what="jwks_uri", timeout=0.2, total_timeout=120,
                     max_bytes=65536, allow_private=False)
    assert server.idle()


def test_the_whole_fetch_is_limited_to_twice_the_timeout_by_default(net, servers, monkeypatch):
    made: list = []

    class Spy(fetch._Deadline):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(fetch, "_Deadline", Spy)
    server = servers()
    net.answers["keys.rp.example"] = [[PUBLIC]]
    net.routes[(PUBLIC, 8080)] = ("127.0.0.1", server.port)
    t0 = time.monotonic()
    assert fetch_public("http://keys.rp.example:8080/", what="jwks_uri", timeout=3, max_bytes=1000,
                        allow_private=False).status == 200
    t1 = time.monotonic()
    [d] = made
    assert t0 + 6 <= d.at <= t1 + 6 and d.read_timeout == 3 and not d.hit


def test_many_black_holed_addresses_do_not_add_up(net):
    """Twenty public addresses that never answer: the attempts stop at the fetch's deadline
    (twice the timeout), not after twenty timeouts."""
    net.answers["slow.rp.example"] = [[f"93.184.216.{i}" for i in range(1, 21)]]
    net.blackhole = {f"93.184.216.{i}" for i in range(1, 21)}
    with pytest.raises(FetchError, match="ConnectTimeoutError"):
        fetch_public("http://slow.rp.example/", what="jwks_uri", timeout=0.2, max_bytes=100, allow_private=False)
    assert 1 <= len(net.connects) <= 3


# ---------------------------------------------------------------- TLS on the name, connection to the address


def test_tls_verifies_the_certificate_on_the_host_name(net, servers, pki):
    internal = servers()
    public = servers(tls=_tls(pki))
    ca = str(pki / "ca.pem")
    net.answers["keys.rp.example"] = [[PUBLIC], ["127.0.0.1"]]
    net.answers["other.rp.example"] = [[PUBLIC]]
    net.routes[(PUBLIC, internal.port)] = ("127.0.0.1", public.port)
    url = f"https://keys.rp.example:{internal.port}/jwks.json"
    got = fetch_public(url, what="jwks_uri", timeout=5, max_bytes=1000, allow_private=False, ca_certs=ca)
    assert got.status == 200 and json.loads(got.body) == DOC
    assert public.sni == ["keys.rp.example"] and public.hits == [("/jwks.json", f"keys.rp.example:{internal.port}")]
    # the same server under another name (the certificate does not name it): refused, no request sent
    with pytest.raises(FetchError, match="SSLError"):
        fetch_public(f"https://other.rp.example:{internal.port}/jwks.json", what="jwks_uri", timeout=5,
                     max_bytes=1000, allow_private=False, ca_certs=ca)
    # a certificate of a CA nobody trusts (the default bundle): refused
    net.answers["keys.rp.example"] = [[PUBLIC]]
    with pytest.raises(FetchError, match="SSLError"):
        fetch_public(url, what="jwks_uri", timeout=5, max_bytes=1000, allow_private=False)
    assert len(public.hits) == 1 and internal.hits == []


def test_jwks_uri_and_sector_identifier_uri_over_rebinding_dns(app, net, servers, pki, make_client, monkeypatch):
    """End to end through the two callers: https, a name that rebinds to 127.0.0.1 on the second
    lookup; the keys and the sector list come from the public address, the internal server
    receives nothing."""
    from idp import client_auth, pairwise
    from idp import clients as registry

    assert not app.config.get("TONGBAN_FETCH_ALLOW_PRIVATE")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki / "ca.pem"))  # as an operator trusting a private CA would
    from tests.idp.test_oidc_modern import CLIENT_EC, public_jwks

    internal = servers()
    doc = public_jwks(CLIENT_EC)
    keys = servers(tls=_tls(pki), body=json.dumps(doc).encode())
    net.answers["keys.rp.example"] = [[PUBLIC], ["127.0.0.1"]]
    net.routes[(PUBLIC, internal.port)] = ("127.0.0.1", keys.port)
    uri = f"https://keys.rp.example:{internal.port}/jwks.json"
    client_auth._fetched.clear()
    try:
        cid, _ = make_client(token_endpoint_auth_method="private_key_jwt", jwks_uri=uri)
        got = client_auth.client_keyset(registry.get_client(cid))
        assert [k.kid for k in got.keys] == [k["kid"] for k in doc["keys"]]
    finally:
        client_auth._fetched.clear()
    uris = ["https://a.example.gov.cn/cb"]
    sector = servers(tls=_tls(pki), body=json.dumps(uris).encode())
    net.answers["keys.rp.example"] = [[PUBLIC], ["127.0.0.1"]]
    net.routes[(PUBLIC, internal.port)] = ("127.0.0.1", sector.port)
    assert pairwise.fetch_sector_uris(f"https://keys.rp.example:{internal.port}/uris.json") == uris
    assert internal.hits == [] and len(keys.hits) == 1 and len(sector.hits) == 1
    assert net.lookups == ["keys.rp.example", "keys.rp.example"]  # one per fetch
    # rebinding to the cloud metadata service on the first lookup: refused before connecting
    net.answers["keys.rp.example"] = [["169.254.169.254"]]
    client_auth._fetched.clear()
    with pytest.raises(client_auth.KeysUnavailable, match="public address"):
        client_auth._fetch(uri)
