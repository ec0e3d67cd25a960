"""``flask seals ...``: create, sign-pdf, verify, trust-root, revoke, authorise, list, log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import AppGroup

from tongban.cli import command_errors, emit
from tongban.errors import TongbanError
from tongban.extensions import db

from . import services
from .errors import BadPdf
from .models import KINDS

seals_cli = AppGroup("seals", help="E-seals: create, seal PDFs, verify, revoke.")


@seals_cli.command("create")
@click.option("--org", "org_uscc", required=True, help="The organisation's USCC.")
@click.option("--name", required=True, help="The seal's name.")
@click.option("--kind", type=click.Choice(KINDS), default="official", show_default=True)
@click.option("--alg", type=click.Choice(("ec", "rsa", "sm2")), default="ec", show_default=True,
              help="EC P-256 (default), RSA-2048 for readers that need it, or SM2 (国密: GB/T 38540 seal, OFD).")
@click.option("--backend", type=click.Choice(("local", "pkcs11")), default=None,
              help="Where the key lives (default TONGBAN_SEAL_KEY_BACKEND).")
@click.option("--valid-days", type=int, default=services.DEFAULT_VALID_DAYS, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@command_errors
def create_cmd(org_uscc, name, kind, alg, backend, valid_days, as_json):
    """An e-seal with its certificate and picture -> {"seal_id", "code"}."""
    seal = services.create_seal(org_uscc, name, kind, alg=alg, backend=backend, valid_days=valid_days,
                                actor="cli")
    emit({"seal_id": seal.id, "code": seal.code, "name": seal.name, "kind": seal.kind, "org": seal.org.uscc},
         as_json, f"{seal.id}  {seal.code}  {seal.kind}  {seal.name}")


@seals_cli.command("sign-pdf")
@click.option("--seal", "seal_id", required=True)
@click.argument("in_pdf", type=click.Path(dir_okay=False))
@click.argument("out_pdf", type=click.Path(dir_okay=False))
@click.option("--page", type=int, default=0, show_default=True, help="Page index (0 = first, -1 = last).")
@click.option("--box", default=None, help="x1,y1,x2,y2 in PDF points (default: bottom right).")
@click.option("--field", "field_name", default=None, help="Sign this (empty) signature field, or name the new one.")
@click.option("--certify", is_flag=True, help="Certify: DocMDP, no changes allowed after this seal.")
@click.option("--purpose", default="命令行盖章", show_default=True, help="Why the seal is used (logged).")
@click.option("--officer", default=None, help="The seal officer's ID number (must be seal-admin of the org).")
@command_errors
def sign_cmd(seal_id, in_pdf, out_pdf, page, box, field_name, certify, purpose, officer):
    """Seal a PDF (PAdES with time-stamp and revocation data, visible seal)."""
    from sqlalchemy import select

    from people.models import User

    seal = services.get_seal(seal_id)
    actor = "cli"
    if officer:
        user = db.session.execute(select(User).where(User.id_number == officer.strip().upper())).scalar_one_or_none()
        if user is None:
            raise TongbanError("no such officer", "unknown_user")
        services.check_officer(seal, user)
        actor = f"officer:{user.sub}"
    parsed_box = None
    if box:
        try:
            parsed_box = tuple(float(v) for v in box.split(","))
        except ValueError:
            raise TongbanError("--box is x1,y1,x2,y2") from None
    try:
        data = Path(in_pdf).read_bytes()
    except OSError as e:
        raise BadPdf(f"cannot read {in_pdf}: {e.strerror}") from None
    sealed = services.sign_pdf(seal, data, purpose=purpose, actor=actor, certify=certify, page=page,
                               box=parsed_box, field_name=field_name)
    Path(out_pdf).write_bytes(sealed)
    click.echo(f"sealed {out_pdf} with {seal.name} ({seal.code})", err=True)


@seals_cli.command("verify")
@click.argument("in_pdf", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def verify_cmd(in_pdf, as_json):
    """Verify the seals of a PDF or OFD: exit 0 valid, 1 not valid, 2 not readable as a PDF or OFD or not
    verifiable (too many signatures, too long)."""
    from .ofd import verify_document

    try:
        data = Path(in_pdf).read_bytes()
        verdict = verify_document(data)
        db.session.commit()
    except (OSError, TongbanError) as e:
        db.session.rollback()
        message = e.message if isinstance(e, TongbanError) else f"cannot read {in_pdf}: {e.strerror}"
        if as_json:
            click.echo(json.dumps({"valid": False, "error": message}, ensure_ascii=False))
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(verdict, ensure_ascii=False))
    else:
        if not verdict["signatures"]:
            click.echo("no seal found")
        for s in verdict["signatures"]:
            flags = [("intact" if s["intact"] else "NOT INTACT"),
                     ("covers the whole document" if s["covers_whole_document"]
                      else f"changed after sealing: {s.get('changes_after', '?')}"),
                     ("trusted" if s["trusted"] else "NOT TRUSTED"), ("REVOKED" if s["revoked"] else "not revoked")]
            click.echo(f"{s['organisation']} · {s['seal_name']} ({s['seal_code'] or '—'}) at {s['signed_at']}: "
                       + ", ".join(flags))
        click.echo("VALID" if verdict["valid"] else "NOT VALID")
    sys.exit(0 if verdict["valid"] else 1)


@seals_cli.command("sign-ofd")
@click.option("--seal", "seal_id", required=True, help="An SM2 seal (seals create --alg sm2).")
@click.argument("in_ofd", type=click.Path(dir_okay=False))
@click.argument("out_ofd", type=click.Path(dir_okay=False))
@click.option("--page", type=int, default=0, show_default=True, help="Page index (0 = first, -1 = last).")
@click.option("--anchor", default=None, help="Centre the seal on the first text object containing this text.")
@click.option("--purpose", default="命令行盖章", show_default=True, help="Why the seal is used (logged).")
@command_errors
def sign_ofd_cmd(seal_id, in_ofd, out_ofd, page, anchor, purpose):
    """Seal an OFD (GB/T 33190 signature, GB/T 38540 v4 SES_Signature, SM2, time-stamped)."""
    from .errors import BadOfd
    from .ofd import sign_ofd

    seal = services.get_seal(seal_id)
    try:
        data = Path(in_ofd).read_bytes()
    except OSError as e:
        raise BadOfd(f"cannot read {in_ofd}: {e.strerror}") from None
    sealed = sign_ofd(seal, data, purpose=purpose, actor="cli", page=page, anchor=anchor)
    Path(out_ofd).write_bytes(sealed)
    click.echo(f"sealed {out_ofd} with {seal.name} ({seal.code})", err=True)


@seals_cli.command("eseal")
@click.argument("seal_id")
@click.argument("out_esl", type=click.Path(dir_okay=False))
@command_errors
def eseal_cmd(seal_id, out_esl):
    """Write an SM2 seal's GB/T 38540 seal data (SESeal v4, DER)."""
    from .gm import eseal_der

    Path(out_esl).write_bytes(eseal_der(services.get_seal(seal_id)))


@seals_cli.command("trust-root")
@command_errors
def trust_root_cmd():
    """Print the seal CA's root certificate (PEM), the trust anchor relying parties install."""
    from keys.ca import root_pem

    click.echo(root_pem(), nl=False)


@seals_cli.command("revoke")
@click.argument("seal_id")
@click.option("--reason", required=True)
@command_errors
def revoke_cmd(seal_id, reason):
    """Revoke a seal; its certificate goes on the CRL at once."""
    seal = services.revoke_seal(seal_id, reason, actor="cli")
    click.echo(f"revoked {seal.id} ({seal.code}); certificate {seal.cert_serial} is on the CRL")


@seals_cli.command("suspend")
@click.argument("seal_id")
@click.option("--reason", required=True)
@command_errors
def suspend_cmd(seal_id, reason):
    """Suspend a seal (it cannot be used until resumed)."""
    services.set_status(seal_id, "suspended", reason, actor="cli")


@seals_cli.command("resume")
@click.argument("seal_id")
@command_errors
def resume_cmd(seal_id):
    services.set_status(seal_id, "active", actor="cli")


@seals_cli.command("authorise")
@click.argument("seal_id")
@click.option("--client", "client_id", required=True, help="The client system allowed to use the seal via the API.")
@click.option("--withdraw", is_flag=True, help="Withdraw the authorisation instead.")
@command_errors
def authorise_cmd(seal_id, client_id, withdraw):
    """Authorise a client system (for POST /api/v1/seals/<seal_id>/sign), or withdraw it."""
    if withdraw:
        services.withdraw_client(seal_id, client_id, actor="cli")
        click.echo(f"{client_id} may no longer use seal {seal_id}")
    else:
        services.authorise_client(seal_id, client_id, actor="cli")
        click.echo(f"{client_id} may use seal {seal_id} (scope seal:sign)")


@seals_cli.command("list")
@click.option("--org", "org_uscc", default=None)
@click.option("--json", "as_json", is_flag=True)
@command_errors
def list_cmd(org_uscc, as_json):
    rows = [services.seal_summary(s) for s in services.list_seals(org_uscc)]
    emit(rows, as_json, "\n".join(f"{r['seal_id']}  {r['code']}  {r['status']:<9}  {r['kind']:<8}  {r['org']}  "
                                  f"{r['name']}" for r in rows))


@seals_cli.command("log")
@click.argument("seal_id")
@click.option("--json", "as_json", is_flag=True)
@command_errors
def log_cmd(seal_id, as_json):
    """Every use and change of a seal, newest first."""
    services.get_seal(seal_id)
    rows = [{"at": r.at.isoformat(timespec="seconds") + "Z", "action": r.action, "actor": r.actor,
             "detail": json.loads(r.detail)} for r in services.uses(seal_id)]
    emit(rows, as_json, "\n".join(f"{r['at']}  {r['action']:<22}  {r['actor']}  "
                                  f"{r['detail'].get('purpose', '')}  {r['detail'].get('document_sha256', '')}"
                                  for r in rows))


@seals_cli.command("picture")
@click.argument("seal_id")
@click.argument("out_pdf", type=click.Path(dir_okay=False))
@command_errors
def picture_cmd(seal_id, out_pdf):
    """Write the seal's picture (a one-page vector PDF)."""
    Path(out_pdf).write_bytes(services.get_seal(seal_id).picture)
