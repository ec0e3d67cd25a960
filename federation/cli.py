"""``flask upstreams``: the register of upstream OpenID providers people may log in with."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from tongban.cli import command_errors, emit, read_password_stdin
from tongban.errors import ValidationError

from . import registry
from .flow import redirect_uri

upstreams_cli = AppGroup("upstreams", help="Upstream OpenID providers people may log in with (brokering).")


def _describe(u: registry.UpstreamInfo) -> dict:
    iss = current_app.config["TONGBAN_ISSUER"]
    return {"name": u.name, "display_name": u.display_name, "issuer": u.issuer, "client_id": u.client_id,
            "scope": u.scope, "id_number_claim": u.id_number_claim, "verified_claim": u.verified_claim,
            "name_claim": u.name_claim, "acr_map": u.acr_map, "trusted_id_numbers": u.trusted_id_numbers,
            "enabled": u.enabled, "redirect_uri": redirect_uri(u.name),
            "backchannel_logout_uri": f"{iss}/federation/{u.name}/backchannel-logout",
            "post_logout_redirect_uri": f"{iss}/federation/logged-out"}


@upstreams_cli.command("add")
@click.option("--name", required=True, help="Short name used in URLs (lower-case letters, digits, dashes).")
@click.option("--issuer", required=True, help="The upstream's issuer URL (its discovery document is fetched).")
@click.option("--client-id", required=True, help="Tongban's client id at the upstream.")
@click.option("--client-secret-stdin", is_flag=True, help="Read Tongban's client secret from standard input.")
@click.option("--scope", default="openid profile", show_default=True)
@click.option("--id-number-claim", default="id_number", show_default=True)
@click.option("--verified-claim", default="id_number_verified", show_default=True,
              help="The claim that must be true for the ID number to count as verified.")
@click.option("--name-claim", default="name", show_default=True)
@click.option("--acr-map", "acr_map", multiple=True, metavar="UPSTREAM_ACR=L3",
              help="The Tongban level an upstream acr value is worth (repeat).")
@click.option("--display-name", help="Shown on the log-in page: 用<display name>登录.")
@click.option("--trusted-id-numbers", is_flag=True,
              help="The upstream is authoritative for ID numbers: a new upstream subject with the ID number of "
                   "an account linked to another subject of it takes the link over.")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def add_cmd(name, issuer, client_id, client_secret_stdin, scope, id_number_claim, verified_claim, name_claim,
            acr_map, display_name, trusted_id_numbers, as_json):
    """Register an upstream OpenID provider."""
    if not client_secret_stdin:
        raise ValidationError("pass the client secret on standard input with --client-secret-stdin", "no_secret")
    secret = read_password_stdin()
    info = registry.add(name=name, issuer=issuer, client_id=client_id, client_secret=secret,
                        display_name=display_name, scope=scope, id_number_claim=id_number_claim,
                        verified_claim=verified_claim, name_claim=name_claim,
                        acr_map=registry.parse_acr_map(acr_map), trusted_id_numbers=trusted_id_numbers)
    data = _describe(info)
    emit(data, as_json, f"added upstream {info.name}; register at {info.issuer}:\n"
                        f"  redirect_uri: {data['redirect_uri']}\n"
                        f"  backchannel_logout_uri: {data['backchannel_logout_uri']}\n"
                        f"  post_logout_redirect_uri: {data['post_logout_redirect_uri']}")


@upstreams_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def list_cmd(as_json):
    """The upstreams and their settings (never the client secret)."""
    rows = [_describe(u) for u in registry.all_upstreams()]
    text = "\n".join(f"{r['name']:16} {'enabled ' if r['enabled'] else 'disabled'} {r['display_name']} "
                     f"{r['issuer']}" for r in rows) or "no upstreams"
    emit(rows, as_json, text)


@upstreams_cli.command("disable")
@click.argument("name")
@command_errors
def disable_cmd(name):
    """Stop offering log-in with this upstream (existing links are kept)."""
    registry.set_enabled(name, False)
    click.echo(f"disabled {name}")


@upstreams_cli.command("enable")
@click.argument("name")
@command_errors
def enable_cmd(name):
    """Offer log-in with this upstream again."""
    registry.set_enabled(name, True)
    click.echo(f"enabled {name}")
