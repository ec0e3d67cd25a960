"""Shared CLI wiring: one commit per command, one stderr line and exit 1 on a domain error."""

from __future__ import annotations

import functools
import json
import sys

import click

from .errors import TongbanError
from .extensions import db


def command_errors(fn):
    """Commit when the command succeeds; on a TongbanError roll back, print one line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            db.session.commit()
            return result
        except TongbanError as e:
            db.session.rollback()
            click.echo(f"error: {e.message}", err=True)
            sys.exit(1)
        except Exception:
            db.session.rollback()
            raise

    return wrapper


def emit(data, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, default=str))
    else:
        click.echo(text if text is not None else json.dumps(data, ensure_ascii=False, indent=2, default=str))


def read_password_stdin() -> str:
    data = sys.stdin.readline()
    return data.rstrip("\r\n")
