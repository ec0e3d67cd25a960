"""``users``, ``orgs``, ``staff`` and ``clients`` command groups."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

import click
from flask.cli import AppGroup

from people import accounts
from people.models import User
from tongban.cli import command_errors, emit, read_password_stdin

from . import client_auth, modern_clients, pairwise, token_exchange
from . import clients as registry
from .errors import InvalidClientMetadata, InvalidDate, NameMismatch, NoAccount, NoPassword, UnknownUser

users_cli = AppGroup("users", help="Citizen accounts.")
orgs_cli = AppGroup("orgs", help="Enterprises and other organisations (by USCC).")
staff_cli = AppGroup("staff", help="Window clerks, seal officers, auditors, administrators.")
clients_cli = AppGroup("clients", help="The register of government systems (OAuth clients).")


def _password(from_stdin: bool) -> str:
    if not from_stdin:
        raise NoPassword("pass the password on standard input with --password-stdin")
    pw = read_password_stdin()
    if not pw:
        raise NoPassword("no password on standard input")
    return pw


@users_cli.command("create")
@click.option("--id-number", required=True)
@click.option("--name", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--phone")
@click.option("--verified", is_flag=True, help="Confirm name + ID number against the register (L3).")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def users_create(id_number, name, password_stdin, phone, verified, as_json):
    """Create a citizen account (ID number checked per GB 11643)."""
    user = accounts.create_user(id_number, name, _password(password_stdin), phone, actor="admin")
    if verified:
        accounts.verify_identity(user)
    emit({"sub": user.sub, "assurance_level": user.acr}, as_json, f"created user {user.sub}")


@users_cli.command("unlock")
@click.argument("login")
@command_errors
def users_unlock(login):
    """Lift a lockout (ID number or phone)."""
    user = accounts.find_user_by_login(login)
    if user is None:
        raise UnknownUser("no such account")
    accounts.unlock(user, "admin")
    click.echo("unlocked")


@orgs_cli.command("create")
@click.option("--uscc", required=True)
@click.option("--name", required=True)
@click.option("--legal-rep", "legal_rep", help="ID number of the legal representative (existing account).")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def orgs_create(uscc, name, legal_rep, as_json):
    """Register an organisation (USCC checked per GB 32100)."""
    org = accounts.create_org(uscc, name, legal_rep)
    emit({"uscc": org.uscc, "name": org.name}, as_json, f"created organisation {org.uscc}")


@staff_cli.command("create")
@click.option("--id-number", required=True)
@click.option("--name", help="Needed only to open a new account; checked against an existing one.")
@click.option("--password-stdin", is_flag=True, help="Only for a new account: its password on standard input.")
@click.option("--org", "org", required=True, help="USCC of the organisation.")
@click.option("--role", required=True, type=click.Choice(accounts.ROLES))
@click.option("--phone")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def staff_create(id_number, name, password_stdin, org, role, phone, as_json):
    """Give an account a role in an organisation (an existing account needs no password; a new one
    is opened with --name and --password-stdin)."""
    from sqlalchemy import select

    from tongban.extensions import db
    from tongban.identifiers import parse_id_number
    from tongban.masking import mask_name

    ident = parse_id_number(id_number).value
    existing = db.session.execute(select(User).where(User.id_number == ident)).scalar_one_or_none()
    if existing is not None:
        if name and name.strip() != existing.name:
            raise NameMismatch(f"the account with ID number {ident} is in the name {mask_name(existing.name)}, "
                                  f"not {name.strip()}: check the ID number")
        password = None  # the account keeps its own password
    else:
        if not name:
            raise NoAccount("no account has this ID number: give --name and --password-stdin to open one")
        password = _password(password_stdin)
    user = accounts.create_staff(ident, name, password, org, role, phone)
    emit({"sub": user.sub, "org": org.upper(), "role": role, "new_account": existing is None}, as_json,
         f"{user.sub} is {role} of {org.upper()}" + ("" if existing is None else " (existing account)"))


def _client_json(row, secret):
    return {
        "client_id": row.client_id, "client_secret": secret, "name": row.name, "department": row.department,
        "redirect_uris": row.redirect_uris, "post_logout_redirect_uris": row.post_logout_redirect_uris,
        "backchannel_logout_uri": row.backchannel_logout_uri, "grant_types": row.grant_types,
        "frontchannel_logout_uri": row.frontchannel_logout_uri,
        "scope": " ".join(row.scopes), "token_endpoint_auth_method": row.token_endpoint_auth_method,
        "id_token_signed_response_alg": row.id_token_signed_response_alg, "first_party": row.first_party,
        "introspection_allowed": row.introspection_allowed,
        "exchange_targets": list(row.exchange_targets or []),
        "backchannel_token_delivery_mode": row.backchannel_token_delivery_mode,
        **_modern_json(row),
        "jwks": row.jwks, "jwks_uri": row.jwks_uri, "require_par": row.require_par,
        "require_signed_request_object": row.require_signed_request_object, "profile": row.profile or None,
    }


def _modern_json(row) -> dict:
    return modern_clients.describe(row)


_PROTOCOLS: dict = {}


def register_protocol(name: str, create) -> None:
    """``clients create --protocol NAME`` registers through ``create(protocol, register_fields,
    service_urls=, allow_proxy=, metadata=)`` -> (data, as_json-ready text); set by casserver/saml."""
    _PROTOCOLS[name] = create


@clients_cli.command("create")
@click.option("--name", required=True)
@click.option("--department", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--scope", default="openid profile", show_default=True)
@click.option("--grant-type", "grant_types", multiple=True,
              type=click.Choice(registry.GRANT_TYPES), help="Repeatable; default authorization_code + refresh_token.")
@click.option("--post-logout-redirect-uri", "post_logout", multiple=True)
@click.option("--backchannel-logout-uri")
@click.option("--frontchannel-logout-uri")
@click.option("--first-party", is_flag=True, help="Skip the consent screen (the operator's own systems).")
@click.option("--public", is_flag=True, help="A public client (no secret; PKCE required).")
@click.option("--auth-method", type=click.Choice(registry.AUTH_METHODS), default=None)
@click.option("--id-token-alg", type=click.Choice(registry.ID_TOKEN_ALGS), default="RS256")
@click.option("--introspection", is_flag=True, help="Allowed to introspect any token.")
@click.option("--client-id", default=None, help="Choose the client_id (default: random).")
@click.option("--function", default="", help="What the system does (register).")
@click.option("--scope-of-use", default="", help="Who uses it and where (register).")
@click.option("--approver", default="", help="Approving department (register).")
@click.option("--approval-date", default=None, help="YYYY-MM-DD (register).")
@click.option("--funding-source", default="", help="Funding source (register).")
@click.option("--contact", default="", help="Responsible contact (register).")
@click.option("--may-exchange-to", "exchange_targets", multiple=True, metavar="CLIENT_ID_OR_RESOURCE",
              help="Repeatable: a system (client_id) or resource URI this system may exchange citizens' "
                   "tokens for (RFC 8693; needs the token-exchange grant).")
@click.option("--backchannel-token-delivery-mode", "ciba_mode", type=click.Choice(["poll"]), default=None,
              help="CIBA token delivery (only poll; the default with the CIBA grant).")
@click.option("--require-dpop", is_flag=True, help="Every token request must carry a DPoP proof (RFC 9449).")
@click.option("--subject-type", type=click.Choice(("public", "pairwise")), default="public", show_default=True,
              help="pairwise: a sub of its own for this system's sector (OIDC Core §8).")
@click.option("--sector-identifier-uri", default=None, help="https URL of a JSON array listing the redirect URIs.")
@click.option("--web-origin", "web_origins", multiple=True, help="Origin allowed CORS (repeatable).")
@click.option("--resource", "resources", multiple=True, help="Resource (RFC 8707) it may ask for (repeatable; "
              "default: every registered one).")
@click.option("--jwks", "jwks_file", default=None, help="The client's public keys: a JWKS JSON file "
              "(private_key_jwt, signed request objects).")
@click.option("--jwks-uri", default=None, help="Or an https URL the client publishes its JWKS at.")
@click.option("--require-par", is_flag=True, help="Only pushed authorization requests (RFC 9126).")
@click.option("--require-signed-request-object", is_flag=True, help="Only signed request objects (RFC 9101).")
@click.option("--profile", type=click.Choice(["fapi2"]), default=None,
              help="fapi2: the FAPI 2.0 Security Profile (PAR, PKCE, private_key_jwt, ...).")
@click.option("--protocol", type=click.Choice(("oidc", "cas", "saml")), default="oidc", show_default=True,
              help="cas: a CAS 3.0 service (--service-url); saml: a SAML 2.0 SP (--metadata).")
@click.option("--service-url", "service_urls", multiple=True, help="CAS: a service URL prefix (repeatable).")
@click.option("--allow-proxy", is_flag=True, help="CAS: the service may validate proxy tickets.")
@click.option("--metadata", "metadata_file", type=click.File("rb"), help="SAML: the SP's metadata (XML file).")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def clients_create(name, department, redirect_uris, scope, grant_types, post_logout, backchannel_logout_uri,
                   frontchannel_logout_uri, first_party, public, auth_method, id_token_alg, introspection, client_id,
                   function, scope_of_use, approver, approval_date, funding_source, contact, jwks_file, jwks_uri,
                   require_par, require_signed_request_object, profile, require_dpop, subject_type,
                   sector_identifier_uri, web_origins, resources, protocol, service_urls, allow_proxy, metadata_file,
                   as_json, exchange_targets=(), ciba_mode=None):
    """Register a government system; prints its client_id and secret (shown once)."""
    try:
        approved = date.fromisoformat(approval_date) if approval_date else None
    except ValueError:
        raise InvalidDate("--approval-date must be YYYY-MM-DD") from None
    if protocol != "oidc":  # CAS services and SAML SPs: the same register entry, no OAuth grants
        if protocol not in _PROTOCOLS:
            raise InvalidClientMetadata(f"protocol {protocol!r} is not available")
        emit(*_PROTOCOLS[protocol](protocol, dict(
            name=name, department=department, scopes=scope.split(), client_id=client_id, function=function,
            scope_of_use=scope_of_use, approver=approver, approval_date=approved, funding_source=funding_source,
            contact=contact), service_urls=list(service_urls), allow_proxy=allow_proxy,
            metadata=metadata_file.read() if metadata_file else None), as_json)
        return
    method = auth_method or ("none" if public else "client_secret_basic")
    modern = {"require_dpop": require_dpop, "subject_type": subject_type, "web_origins": list(web_origins),
              "allowed_resources": list(resources)}
    if sector_identifier_uri:
        registry.check_uri(sector_identifier_uri, "sector_identifier_uri")
        modern["sector_identifier_uri"] = sector_identifier_uri
        modern["sector_uris"] = pairwise.fetch_sector_uris(sector_identifier_uri)  # before any transaction
    jwks = client_auth.load_jwks_file(jwks_file) if jwks_file else None
    row, secret = registry.create_client(
        name=name, department=department, redirect_uris=list(redirect_uris),
        grant_types=list(grant_types) or ["authorization_code", "refresh_token"], scopes=scope.split(),
        post_logout_redirect_uris=list(post_logout), backchannel_logout_uri=backchannel_logout_uri,
        frontchannel_logout_uri=frontchannel_logout_uri, first_party=first_party, token_endpoint_auth_method=method,
        id_token_signed_response_alg=id_token_alg,
        introspection_allowed=introspection, client_id=client_id, function=function,
        scope_of_use=scope_of_use, approver=approver, approval_date=approved, funding_source=funding_source,
        contact=contact, exchange_targets=list(exchange_targets), backchannel_token_delivery_mode=ciba_mode,
        jwks=jwks, jwks_uri=jwks_uri, require_par=require_par,
        require_signed_request_object=require_signed_request_object, profile=profile or "", **modern)
    data = _client_json(row, secret)
    emit(data, as_json, f"client_id: {row.client_id}\n" + (
        f"client_secret: {secret} (shown once)" if secret else
        f"token_endpoint_auth_method: {row.token_endpoint_auth_method}"))


@clients_cli.command("report")
@click.option("--dormant-days", default=90, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@command_errors
def clients_report(dormant_days, as_json):
    """The register with usage; systems unused for N days are flagged dormant."""
    rows = registry.report(dormant_days)
    if as_json:
        emit([asdict(r) for r in rows], True)
        return
    for r in rows:
        flag = "DORMANT" if r.dormant else "active "
        click.echo(f"{flag}  {r.client_id}  {r.department} / {r.name}  last used: {r.last_used or 'never'}"
                   f"  30d: {r.logins_30d} log-ins, {r.tokens_30d} tokens{'' if r.enabled else '  (disabled)'}")


@clients_cli.command("rotate-secret")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def clients_rotate(client_id, as_json):
    """Issue a new secret (the old one stops working at once)."""
    secret = registry.rotate_secret(client_id)
    emit({"client_id": client_id, "client_secret": secret}, as_json, f"client_secret: {secret}")


@clients_cli.command("disable")
@click.argument("client_id")
@command_errors
def clients_disable(client_id):
    """Disable a system: its tokens stop working at once."""
    registry.set_enabled(client_id, False)
    click.echo(f"disabled {client_id}")


@clients_cli.command("enable")
@click.argument("client_id")
@command_errors
def clients_enable(client_id):
    registry.set_enabled(client_id, True)
    click.echo(f"enabled {client_id}")


@clients_cli.command("allow-exchange")
@click.argument("from_client")
@click.argument("target")
@command_errors
def clients_allow_exchange(from_client, target):
    """Let FROM_CLIENT exchange citizens' access tokens for TARGET (a client_id or resource URI)."""
    targets = token_exchange.allow(from_client, target)
    click.echo(f"{from_client} may exchange tokens for: {', '.join(targets)}")


@clients_cli.command("disallow-exchange")
@click.argument("from_client")
@click.argument("target")
@command_errors
def clients_disallow_exchange(from_client, target):
    """Withdraw TARGET from FROM_CLIENT's token-exchange targets."""
    targets = token_exchange.disallow(from_client, target)
    click.echo(f"{from_client} may exchange tokens for: {', '.join(targets) or '(nothing)'}")


@clients_cli.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def clients_show(client_id, as_json):
    """A registered system's metadata (never its secret)."""
    row = registry.get_row(client_id)
    data = _client_json(row, None)
    data.pop("client_secret")
    emit(data, as_json, "\n".join(f"{k}: {v}" for k, v in data.items()))
