"""``make run``: the provider and the two demo department portals in one process.

Three threaded werkzeug servers (development only; ``make serve`` is production): the
provider on the issuer's host and port (http://127.0.0.1:5000), the portals on
http://localhost:8081 and http://localhost:8082 — another host name than the
provider's, so the browser keeps their cookies apart. Ctrl-C stops all three.
"""

from __future__ import annotations

import signal
import sys
import threading
from urllib.parse import urlsplit

from werkzeug.serving import make_server


def main() -> int:
    from tongban import create_app
    from tongban.config import ConfigError, instance_dir

    from . import PORTALS
    from .portal import create_portal
    from .seed import portal_secret

    try:
        app = create_app()
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    # development: text messages (SMS codes) go to this terminal unless a gateway is configured
    app.config["TONGBAN_SMS_GATEWAY"] = app.config.get("TONGBAN_SMS_GATEWAY") or "log"
    issuer = app.config["TONGBAN_ISSUER"]
    parts = urlsplit(issuer)
    folder = instance_dir()
    servers = [("Tongban", issuer, make_server(parts.hostname or "127.0.0.1", parts.port or 80, app, threaded=True))]
    for spec in PORTALS:
        portal = create_portal(spec, issuer=issuer, client_secret=portal_secret(spec, folder),
                               secret_key=app.config["SECRET_KEY"] + spec.key)
        servers.append((spec.name, spec.base_url, make_server("127.0.0.1", spec.port, portal, threaded=True)))
    threads = [threading.Thread(target=s.serve_forever, name=name, daemon=True) for name, _, s in servers]
    for t in threads:
        t.start()
    for name, url, _ in servers:
        print(f" * {name}: {url}/", flush=True)
    print(" * Ctrl-C stops all three", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    for _, _, s in servers:
        s.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
