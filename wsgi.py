"""The WSGI entry point: ``app = create_app()`` for Granian, gunicorn and ``flask --app wsgi``."""

from tongban import create_app
from tongban.config import ConfigError

try:
    app = create_app()
except ConfigError as e:  # one line naming the variable, not a traceback
    raise SystemExit(f"configuration error: {e}") from None
