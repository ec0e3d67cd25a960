"""``flask licences ...``: the catalogue, issuing, PDFs and status changes (docs/commands.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import AppGroup

from tongban.cli import command_errors, emit
from tongban.errors import ValidationError

from . import services

licences_cli = AppGroup("licences", help="E-licences (电子证照).")
ACTOR = "cli"


def _fields(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--field takes KEY=VALUE, got {pair!r}", "invalid_field")
        out[key.strip()] = value
    return out


@licences_cli.command("types")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def types_cmd(as_json):
    """The e-licence catalogue: type code, name, holder kind."""
    rows = [services.type_dict(t) for t in services.list_types()]
    emit(rows, as_json, "\n".join(f"{r['code']}  {r['name']}  {r['holder_kind']}" for r in rows))


@licences_cli.command("issue")
@click.option("--type", "type_ref", required=True, help="type code or Chinese name")
@click.option("--holder-id", required=True, help="citizen ID number or USCC")
@click.option("--holder-name", required=True)
@click.option("--issuer-org", default=None, help="USCC of the issuing organisation (default: the authority)")
@click.option("--department", default=None,
              help="USCC of the issuing department (default: the issuer); needs a delegation when it differs")
@click.option("--field", "fields", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--valid-until", default=None, help="YYYY-MM-DD")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def issue_cmd(type_ref, holder_id, holder_name, issuer_org, department, fields, valid_until, as_json):
    """Issue an e-licence, sealed by the issuer's licence seal."""
    lic = services.issue(type_ref, holder_id, holder_name, _fields(fields), issuer_uscc=issuer_org,
                         valid_until=valid_until, actor=ACTOR, department_uscc=department)
    out = {"id": lic.identifier, "verify_url": services.verify_url(lic.verify_code), "type": lic.type_code,
           "type_name": lic.type_name, "version": f"{lic.version:03d}",
           "valid_until": lic.valid_until.isoformat() if lic.valid_until else None}
    emit(out, as_json, f"{lic.identifier}\n{out['verify_url']}")


@licences_cli.command("change")
@click.argument("identifier")
@click.option("--field", "fields", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--holder-name", default=None)
@click.option("--valid-until", default=None)
@click.option("--reason", default="变更")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def change_cmd(identifier, fields, holder_name, valid_until, reason, as_json):
    """A new version of a licence with changed data (the old version is superseded)."""
    lic = services.change(identifier, _fields(fields), ACTOR, holder_name=holder_name, valid_until=valid_until,
                          reason=reason)
    out = {"id": lic.identifier, "verify_url": services.verify_url(lic.verify_code),
           "version": f"{lic.version:03d}"}
    emit(out, as_json, f"{lic.identifier}\n{out['verify_url']}")


@licences_cli.command("pdf")
@click.argument("identifier")
@click.argument("out", type=click.Path(dir_okay=False))
@command_errors
def pdf_cmd(identifier, out):
    """Write the sealed PDF of an e-licence."""
    lic = services.find(identifier)
    Path(out).write_bytes(lic.pdf)
    click.echo(f"{out}: {len(lic.pdf)} bytes, {lic.identifier}")


@licences_cli.command("ofd")
@click.argument("identifier")
@click.argument("out", type=click.Path(dir_okay=False))
@command_errors
def ofd_cmd(identifier, out):
    """Write the e-licence as an OFD sealed with the issuer's SM2 licence seal."""
    from .ofd import sealed_ofd

    lic = services.find(identifier)
    data = sealed_ofd(lic, actor="cli")
    Path(out).write_bytes(data)
    click.echo(f"{out}: {len(data)} bytes, {lic.identifier}")


def _status_cmd(name: str, fn, needs_reason: bool):
    @click.argument("identifier")
    @command_errors
    def cmd(identifier, reason=None):
        lic = fn(identifier, reason, ACTOR) if needs_reason else fn(identifier, ACTOR)
        click.echo(f"{lic.identifier}: {lic.status}")

    if needs_reason:
        cmd = click.option("--reason", required=True)(cmd)
    cmd.__doc__ = f"{name.capitalize()} an e-licence (recorded in the audit log)."
    licences_cli.command(name)(cmd)


_status_cmd("revoke", services.revoke, True)
_status_cmd("suspend", services.suspend, True)
_status_cmd("resume", services.resume, False)


@licences_cli.command("delegate")
@click.argument("department")
@click.option("--issuer-org", default=None, help="whose licence seal it may issue under (default: the authority)")
@click.option("--withdraw", is_flag=True, help="withdraw the delegation instead")
@command_errors
def delegate_cmd(department, issuer_org, withdraw):
    """Allow a department without its own licence seal to issue under the authority's (or withdraw it)."""
    if withdraw:
        n = services.withdraw_delegation(department, issuer_org, ACTOR)
        if not n:
            raise ValidationError(f"{department} has no such delegation", "no_delegation")
        click.echo(f"{department}: delegation withdrawn")
        return
    row = services.delegate(department, issuer_org, ACTOR)
    click.echo(f"{row.department_uscc}: may issue under the licence seal of {row.issuer_uscc}")


@licences_cli.command("expire")
@command_errors
def expire_cmd():
    """Mark licences past their end date as expired (each audited)."""
    rows = services.expire_due(ACTOR)
    click.echo(f"{len(rows)} licence(s) expired")


@licences_cli.command("type-add")
@click.argument("spec", type=click.File("r", encoding="utf-8"))
@click.option("--json", "as_json", is_flag=True)
@command_errors
def type_add_cmd(spec, as_json):
    """Add a licence type from a JSON file: code, name, holder_kind, items, validity, layout."""
    try:
        data = json.load(spec)
    except ValueError as e:
        raise ValidationError(f"not JSON: {e}", "invalid_licence_type") from None
    row = services.add_type(data, ACTOR)
    emit(services.type_dict(row), as_json, f"{row.code}  {row.name}  {row.holder_kind}")


