"""CPU of one fetch of a client-registered URL (a jwks_uri): the pinned helper (tongban/fetch.py,
urllib3, one resolution, connection to the checked address) against what it replaced (a
resolution for the check, then ``requests.get`` resolving again).

The document is served by a separate process (python -m http.server on 127.0.0.1), so this
process's CPU (``time.process_time``: user + system of this process only) is the client side
alone. Both ways fetch the same ~1 KiB JSON over plain HTTP, a new connection each time, as a
jwks_uri fetch does. Prints CPU milliseconds per fetch; no timing is asserted anywhere.

    .venv/bin/python bench/fetch.py [N]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    import requests

    from tongban.fetch import fetch_public, resolve

    with tempfile.TemporaryDirectory() as d:
        Path(d, "jwks.json").write_text(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "A" * 43,
                                                              "y": "B" * 43, "kid": f"k{i}"} for i in range(8)]}))
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://localhost:{port}/jwks.json"
            for _ in range(50):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)

            def pinned() -> int:
                return len(fetch_public(url, what="jwks_uri", timeout=5, max_bytes=65536, allow_private=True).body)

            def before() -> int:
                resolve("localhost", port, "jwks_uri", allow_private=True)  # the old check's lookup
                with requests.Session() as s:
                    s.trust_env = False
                    with s.get(url, timeout=5, stream=True, allow_redirects=False) as r:
                        return len(b"".join(r.iter_content(8192)))

            results = {}
            for name, fn in (("pinned (tongban/fetch.py)", pinned), ("check + requests.get", before)):
                for _ in range(20):
                    fn()  # warm-up: imports, certifi, caches
                cpu0, wall0 = time.process_time(), time.monotonic()
                for _ in range(n):
                    assert fn() > 0
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                results[name] = cpu
                print(f"{name:24s} {cpu / n * 1000:6.3f} ms CPU per fetch  ({wall / n * 1000:6.2f} ms wall, n={n})")
            load = os.getloadavg()
            print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
        finally:
            server.terminate()
            server.wait(5)


if __name__ == "__main__":
    main()
