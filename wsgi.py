"""The WSGI entry point: ``app = create_app()`` for Granian, gunicorn and ``flask --app wsgi``."""

import os

from tongban import create_app
from tongban.config import ConfigError

try:
    app = create_app()
except ConfigError as e:  # one line naming the variable, not a traceback
    raise SystemExit(f"configuration error: {e}") from None

if os.environ.get("FLASK_RUN_FROM_CLI") != "true":  # a server, not a `flask --app wsgi` command
    from tongban.shared_secrets import check_at_startup

    # one log line when this server's secrets differ from the deployment's (/readyz then says 503)
    check_at_startup(app)
