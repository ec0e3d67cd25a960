"""``flask ratings ...``: the monthly report, the national-platform export and escalation."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from tongban import audit
from tongban.cli import command_errors, emit

from . import services

ratings_cli = AppGroup("ratings", help="好差评: service ratings, bad-rating cases, reports.")


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}%"


@ratings_cli.command("report")
@click.option("--month", help="YYYY-MM (Beijing time); all months when left out")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command_errors
def report_cmd(month, as_json):
    """Satisfaction rate, bad ratings and on-time handling by department, service item and channel."""
    data = services.report(month)
    lines = []
    t = data["totals"]
    lines.append(f"好差评 {data['month']}: {t['ratings']} ratings, satisfaction {_pct(t['satisfaction_rate'])}, "
                 f"{t['bad']} bad, {t['closed_on_time']} handled on time, {t['overdue']} overdue")
    for title, key in (("department", "by_department"), ("service item", "by_service_item"),
                       ("channel", "by_channel")):
        lines.append(f"by {title}:")
        for r in data[key]:
            lines.append(f"  {r['key']}  {r['name']}  {r['ratings']} ratings  {_pct(r['satisfaction_rate'])}  "
                         f"{r['bad']} bad  {r['closed_on_time']} on time")
    emit(data, as_json, "\n".join(lines))


@ratings_cli.command("export")
@click.option("--month", required=True, help="YYYY-MM")
@command_errors
def export_cmd(month):
    """The month's evaluations as GB/T 39735 records (JSON) for the national platform."""
    services.check_month(month)
    rows = services.export(month)
    audit.record("rating.exported", actor="cli", object=f"month:{month}", detail={"count": len(rows)})
    emit({"month": month, "standard": "GB/T 39735-2020", "records": rows}, True)


@ratings_cli.command("escalate")
@command_errors
def escalate_cmd():
    """Escalate overdue bad-rating cases to the supervising authority (audited)."""
    n = services.escalate_overdue()
    click.echo(f"{n} case(s) escalated")
