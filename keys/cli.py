from __future__ import annotations

import click
from flask.cli import AppGroup

from tongban.cli import command_errors

from . import services

keys_cli = AppGroup("keys", help="Token-signing keys: list and rotate.")


@keys_cli.command("list")
@command_errors
def list_cmd():
    """One line per key: kid, algorithm, state (next, active, retired), created."""
    for key, state in services.list_keys():
        click.echo(f"{key.kid}  {key.alg}  {state:<7}  {key.created_at.isoformat(timespec='seconds')}Z"
                   f"  activates {key.activates_at.isoformat(timespec='seconds')}Z")


@keys_cli.command("rotate")
@click.option("--alg", "algs", multiple=True, type=click.Choice(services.ALGORITHMS),
              help="Rotate only this algorithm (repeatable); default all.")
@click.option("--delay", type=int, default=None,
              help="Seconds before the new key signs (default TONGBAN_KEY_ACTIVATION_DELAY).")
@command_errors
def rotate_cmd(algs, delay):
    """Publish a new key now; it starts signing after the activation delay."""
    for key in services.rotate(tuple(algs) or services.ALGORITHMS, delay):
        click.echo(f"{key.kid}  {key.alg}  next     activates {key.activates_at.isoformat(timespec='seconds')}Z")


@keys_cli.command("rotate-saml")
@click.option("--delay", type=int, default=None,
              help="Seconds before the new key signs (default TONGBAN_KEY_ACTIVATION_DELAY).")
@command_errors
def rotate_saml_cmd(delay):
    """A new SAML signing key: in the IdP metadata now, signing after the activation delay."""
    from . import saml

    row = saml.rotate(delay)
    click.echo(f"{row.kid}  saml  next     activates {row.activates_at.isoformat(timespec='seconds')}Z")
