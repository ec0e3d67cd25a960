"""``resources`` command group: the register of APIs tokens may be asked for (RFC 8707)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from tongban.cli import command_errors, emit

from . import resources

resources_cli = AppGroup("resources", help="APIs access tokens may be issued for (RFC 8707 resource indicators).")


@resources_cli.command("add")
@click.option("--uri", required=True, help="The API's identifier: an absolute https URL without fragment.")
@click.option("--name", required=True)
@click.option("--department", required=True)
@click.option("--scope", default=None, help="Only clients registered for this scope may ask for it.")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def resources_add(uri, name, department, scope, as_json):
    """Register a department API as a resource."""

    row = resources.add(uri, name, department, scope)
    emit({"uri": row.uri, "name": row.name, "department": row.department, "scope": row.scope}, as_json,
         f"registered resource {row.uri}")


@resources_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def resources_list(as_json):
    """The built-in and registered resources."""

    rows = resources.list_all()
    if as_json:
        emit(rows, True)
        return
    for r in rows:
        state = "built-in" if r["builtin"] else ("enabled " if r["enabled"] else "disabled")
        click.echo(f"{state}  {r['uri']}  {r['department']} / {r['name']}"
                   + (f"  scope: {r['scope']}" if r["scope"] else ""))


@resources_cli.command("disable")
@click.argument("uri")
@command_errors
def resources_disable(uri):
    """Stop issuing tokens for a resource (tokens already issued live out their minutes)."""

    resources.disable(uri)
    click.echo(f"disabled {uri}")
