"""The WSGI entry point: ``app = create_app()`` for Granian, gunicorn and ``flask --app wsgi``."""

from tongban import create_app

app = create_app()
