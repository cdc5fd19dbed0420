"""Command groups: `tapwatch subscriptions …`, `tapwatch plans …`, `tapwatch endpoints import`.

Without `--as USER` the command line acts as the local administrator ("cli"): whoever can
open the database administers it. With `--as USER` the user's role on the subscription
decides, and refusals are audited as they are in the console.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from tapwatch.console.commands import _engine, _fail, with_db

as_option = click.option("--as", "as_user", default=None, metavar="USER",
                         help="Act as this console user (their role on the subscription decides).")
fmt_option = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                          show_default=True)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-01-01T00:00Z)") from None


def _run(db: str | None, database_url: str | None, as_user: str | None,
         work: Callable[[Any, Any], Any]) -> Any:
    """Run `work(session, actor)` in one transaction; plan errors become one-line failures."""
    from tapwatch.plans import ledger
    from tapwatch.plans.access import CLI, PlanError, Refused, actor_for_user, transaction
    from tapwatch.records import FileError
    from tapwatch.store.db import sessions

    maker = sessions(_engine(db, database_url))
    try:
        with transaction(maker) as s:
            ledger.refresh(s)
        with transaction(maker) as s:
            actor = actor_for_user(s, as_user, "cli:") if as_user else CLI
            return work(s, actor)
    except Refused as e:
        _fail(f"refused: {e}")
    except (PlanError, FileError) as e:
        _fail(str(e))


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- subscriptions ----------------------------------------------------------------------------


@click.group("subscriptions")
def subscriptions_group() -> None:
    """Subscriptions: sensors, per-subscription roles, inventory export/import."""


@subscriptions_group.command("create")
@click.argument("name")
@click.option("--description", default=None)
@with_db
@as_option
def sub_create(name: str, description: str | None, db: str | None, database_url: str | None,
               as_user: str | None) -> None:
    """Add a subscription (the first one is the default)."""
    from tapwatch.plans import subscriptions

    def work(s: Any, actor: Any) -> str:
        sub = subscriptions.create(s, actor, name, description)
        return f"created subscription {sub.name} (id {sub.id}{', default' if sub.is_default else ''})"

    click.echo(_run(db, database_url, as_user, work))


def _sub_json(s: Any, sub: Any) -> dict[str, Any]:
    from tapwatch.plans import features, ledger, subscriptions

    return {"id": sub.id, "name": sub.name, "description": sub.description, "default": sub.is_default,
            "sensors": subscriptions.sensors(s, sub.id),
            "roles": [{**r, "assigned_at": str(r["assigned_at"])} for r in subscriptions.roles(s, sub.id)],
            "entitlements": features.entitlements(s, sub.id).as_dict(),
            "usage": ledger.usage(s, sub).as_dict()}


@subscriptions_group.command("list")
@with_db
@fmt_option
def sub_list(db: str | None, database_url: str | None, fmt: str) -> None:
    """Subscriptions with their plan state and billable devices."""
    from tapwatch.plans import subscriptions

    rows = _run(db, database_url, None,
                lambda s, _a: [_sub_json(s, sub) for sub in subscriptions.all_subscriptions(s)])
    if fmt == "json":
        _echo_json(rows)
        return
    if not rows:
        click.echo("no subscriptions (the console is not under plan management)")
    for r in rows:
        e, u = r["entitlements"], r["usage"]
        plan = f"{e['kind']} plan {e['plan_id']}" if e["active"] else f"no active plan ({e['reason']})"
        click.echo(f"{r['id']:>4}  {r['name']}{' (default)' if r['default'] else ''}  {plan}  "
                   f"billable {u['billable_devices']}"
                   + (f" of {u['committed_devices']} committed" if u["committed_devices"] else ""))


@subscriptions_group.command("set-default")
@click.argument("subscription")
@with_db
@as_option
def sub_default(subscription: str, db: str | None, database_url: str | None, as_user: str | None) -> None:
    """Make SUBSCRIPTION hold the devices of sensors assigned to none."""
    from tapwatch.plans import subscriptions

    def work(s: Any, actor: Any) -> str:
        sub = subscriptions.get(s, subscription)
        subscriptions.set_default(s, actor, sub)
        return f"{sub.name} is the default subscription"

    click.echo(_run(db, database_url, as_user, work))


@subscriptions_group.command("sensor")
@click.argument("subscription")
@click.argument("sensor")
@click.option("--remove", is_flag=True, help="Unassign the sensor instead.")
@with_db
@as_option
def sub_sensor(subscription: str, sensor: str, remove: bool, db: str | None, database_url: str | None,
               as_user: str | None) -> None:
    """Assign SENSOR's devices to SUBSCRIPTION (or --remove it)."""
    from tapwatch.plans import subscriptions

    def work(s: Any, actor: Any) -> str:
        sub = subscriptions.get(s, subscription)
        if remove:
            subscriptions.remove_sensor(s, actor, sub, sensor)
            return f"sensor {sensor} removed from {sub.name}"
        subscriptions.add_sensor(s, actor, sub, sensor)
        return f"sensor {sensor} assigned to {sub.name}"

    click.echo(_run(db, database_url, as_user, work))


@subscriptions_group.command("role")
@click.argument("subscription")
@click.argument("username")
@click.argument("role", required=False)
@click.option("--remove", is_flag=True, help="Remove the user's role there (their console role applies).")
@with_db
@as_option
def sub_role(subscription: str, username: str, role: str | None, remove: bool, db: str | None,
             database_url: str | None, as_user: str | None) -> None:
    """Give USERNAME a ROLE on SUBSCRIPTION (security_reader … owner), or --remove it."""
    from tapwatch.plans import subscriptions

    if bool(role) == remove:
        raise click.UsageError("give a ROLE or --remove")

    def work(s: Any, actor: Any) -> str:
        sub = subscriptions.get(s, subscription)
        subscriptions.set_role(s, actor, sub, username, None if remove else role)
        return f"{username} on {sub.name}: {'console role' if remove else role}"

    click.echo(_run(db, database_url, as_user, work))


@subscriptions_group.command("show")
@click.argument("subscription")
@with_db
def sub_show(subscription: str, db: str | None, database_url: str | None) -> None:
    """One subscription as JSON: sensors, roles, entitlements, usage."""
    from tapwatch.plans import subscriptions

    _echo_json(_run(db, database_url, None, lambda s, _a: _sub_json(s, subscriptions.get(s, subscription))))


@subscriptions_group.command("export")
@click.argument("subscription")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@with_db
@as_option
def sub_export(subscription: str, output: Path, db: str | None, database_url: str | None,
               as_user: str | None) -> None:
    """Write the subscription's inventory, manual edits included, to a JSON file."""
    from tapwatch.plans import subscriptions, transfer

    doc = _run(db, database_url, as_user,
               lambda s, a: transfer.export_inventory(s, a, subscriptions.get(s, subscription)))
    output.write_text(json.dumps(doc, indent=1, default=str))
    click.echo(f"exported {len(doc['devices'])} devices to {output}")


@subscriptions_group.command("import")
@click.argument("subscription")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sensor", default=None, help="Sensor name for devices created by the import.")
@with_db
@as_option
def sub_import(subscription: str, file: Path, sensor: str | None, db: str | None,
               database_url: str | None, as_user: str | None) -> None:
    """Load an export into SUBSCRIPTION's inventory (new devices created, edits applied)."""
    from tapwatch.plans import subscriptions, transfer

    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        _fail(f"{file}: not a readable JSON export ({e})")
    stats = _run(db, database_url, as_user, lambda s, a: transfer.import_inventory(
        s, a, subscriptions.get(s, subscription), doc, sensor))
    click.echo(f"imported {file}: {stats['created']} devices created, {stats['updated']} updated, "
               f"{stats['addresses']} addresses added")


# -- plans ------------------------------------------------------------------------------------


@click.group("plans")
def plans_group() -> None:
    """Plans: add, edit, cancel, show, estimate; committed vs billable devices."""


@plans_group.command("add")
@click.argument("subscription")
@click.option("--kind", type=click.Choice(["trial", "monthly", "annual"]), required=True)
@click.option("--committed", type=int, default=None, help="Committed devices (not for trials).")
@click.option("--coverage", type=click.Choice(["both", "eiot", "ot"]), default="both", show_default=True,
              help="Enterprise IoT (eiot), OT, or both.")
@click.option("--start", default=None, help="When it starts (ISO 8601 UTC; default now).")
@with_db
@as_option
def plans_add(subscription: str, kind: str, committed: int | None, coverage: str, start: str | None,
              db: str | None, database_url: str | None, as_user: str | None) -> None:
    """Add a plan to SUBSCRIPTION (converting a trial: cancel it, then add)."""
    from tapwatch.plans import plans, subscriptions

    when = _time(start)

    def work(s: Any, actor: Any) -> str:
        plan = plans.add(s, actor, subscriptions.get(s, subscription), kind, committed, coverage, when)
        return f"added {kind} plan {plan.id} from {plan.start:%Y-%m-%d %H:%M} UTC" + (
            f" until {plan.end:%Y-%m-%d %H:%M} UTC" if plan.end else "")

    click.echo(_run(db, database_url, as_user, work))


@plans_group.command("edit")
@click.argument("plan_id", type=int)
@click.option("--committed", type=int, default=None)
@click.option("--coverage", type=click.Choice(["both", "eiot", "ot"]), default=None)
@click.option("--effective", default=None, help="When the change takes effect (ISO 8601 UTC; default now).")
@with_db
@as_option
def plans_edit(plan_id: int, committed: int | None, coverage: str | None, effective: str | None,
               db: str | None, database_url: str | None, as_user: str | None) -> None:
    """Change committed devices or coverage of a plan, from a stated time."""
    from tapwatch.plans import plans

    when = _time(effective)

    def work(s: Any, actor: Any) -> str:
        plans.edit(s, actor, plan_id, committed, coverage, when)
        return f"plan {plan_id} changed" + (f" from {when}" if when else "")

    click.echo(_run(db, database_url, as_user, work))


@plans_group.command("cancel")
@click.argument("plan_id", type=int)
@click.option("--part", type=click.Choice(["eiot", "ot"]), default=None,
              help="Cancel only this part (eiot = Enterprise IoT); the other keeps running.")
@click.option("--effective", default=None, help="When it takes effect (ISO 8601 UTC; default now).")
@with_db
@as_option
def plans_cancel(plan_id: int, part: str | None, effective: str | None, db: str | None,
                 database_url: str | None, as_user: str | None) -> None:
    """Cancel a plan, or one part of it."""
    from tapwatch.plans import plans

    when = _time(effective)

    def work(s: Any, actor: Any) -> str:
        plans.cancel(s, actor, plan_id, part, when)
        return f"plan {plan_id}: {'the ' + part + ' part' if part else 'the plan'} cancelled" + (
            f" from {when}" if when else "")

    click.echo(_run(db, database_url, as_user, work))


def _show(s: Any, subscription: str) -> dict[str, Any]:
    from tapwatch.plans import ledger, plans, subscriptions
    from tapwatch.store.console_models import utcnow

    sub = subscriptions.get(s, subscription)
    first, nxt = ledger.month_bounds(utcnow().date())
    return {**_sub_json(s, sub), "plans": [plans.plan_json(s, p) for p in plans.plans_of(s, sub.id)],
            "trend": ledger.trend(s, sub.id), "this_month": ledger.prorate(s, sub.id, first, nxt)}


@plans_group.command("show")
@click.argument("subscription", required=False)
@with_db
@fmt_option
def plans_show(subscription: str | None, db: str | None, database_url: str | None, fmt: str) -> None:
    """The plan of SUBSCRIPTION (default: the default one): committed vs billable, trend, ledger."""
    from tapwatch.plans import subscriptions

    def work(s: Any, _a: Any) -> dict[str, Any]:
        ref: int | str | None = subscription
        if ref is None:
            sub = subscriptions.default(s)
            if sub is None:
                from tapwatch.plans.access import NotFound
                raise NotFound("no subscriptions yet (tapwatch subscriptions create NAME)")
            ref = sub.id
        return _show(s, str(ref))

    data = _run(db, database_url, None, work)
    if fmt == "json":
        _echo_json(data)
        return
    e, u = data["entitlements"], data["usage"]
    click.echo(f"subscription {data['name']} (id {data['id']})")
    if e["active"]:
        click.echo(f"  plan {e['plan_id']}: {e['kind']}, covers {', '.join(e['coverage'])}, committed "
                   f"{e['committed_devices'] if e['committed_devices'] is not None else 'no limit (trial)'}")
    else:
        click.echo(f"  no active plan: {e['reason']} (alerts, recommendations, vulnerabilities and "
                   "sensor data are off; the inventory stays readable)")
    c = u["counts"]
    click.echo(f"  billable devices: {u['billable_devices']} (Enterprise IoT {c['eiot']}, OT {c['ot']}; "
               f"left out: {c['excluded'] or 'none'})")
    if u["warning"]:
        click.echo(f"  WARNING: {u['warning']}")
    for p in data["plans"]:
        click.echo(f"  plan {p['id']} {p['kind']} {p['state']} {p['start']} → {p['end'] or 'open'}")
        for q in p["periods"]:
            committed = q["committed_devices"] if q["committed_devices"] is not None else "-"
            peak = q["billable_peak"] if q["billable_peak"] is not None else "-"
            click.echo(f"    {q['start']} → {q['end'] or 'open'}  {q['coverage']:<4}  committed "
                       f"{committed}  ({q['change']}, peak {peak})")
    if data["trend"]:
        click.echo("  trend: " + ", ".join(f"{t['day']}={t['billable']}" for t in data["trend"][-14:]))


@plans_group.command("snapshot")
@with_db
def plans_snapshot(db: str | None, database_url: str | None) -> None:
    """Record today's billable count of every subscription (run daily; idempotent)."""
    from tapwatch.plans import subscriptions

    n = _run(db, database_url, None, lambda s, _a: len(subscriptions.all_subscriptions(s)))
    click.echo(f"recorded today's billable count of {n} subscription(s)")


@plans_group.command("estimate")
@click.option("--subscription", default=None, help="Count only this subscription's devices.")
@click.option("--cmdb", "cmdb", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV export of a CMDB (MAC, IP, name, class or type columns).")
@click.option("--meraki", "meraki", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV export of a Meraki client list.")
@click.option("--coverage", type=click.Choice(["both", "eiot", "ot"]), default="both", show_default=True)
@with_db
@fmt_option
def plans_estimate(subscription: str | None, cmdb: tuple[str, ...], meraki: tuple[str, ...], coverage: str,
                   db: str | None, database_url: str | None, fmt: str) -> None:
    """Suggest a committed number (a multiple of 100) from the inventory and imported lists."""
    from tapwatch.plans import estimate, subscriptions

    sources = [("cmdb", p) for p in cmdb] + [("meraki", p) for p in meraki]

    def work(s: Any, _a: Any) -> dict[str, Any]:
        sub_id = subscriptions.get(s, subscription).id if subscription else None
        return estimate.estimate(s, sources, coverage, sub_id).as_dict()

    data = _run(db, database_url, None, work)
    for err in data["errors"]:
        click.echo(f"tapwatch: warning: {err}", err=True)
    if fmt == "json":
        _echo_json(data)
        return
    click.echo(f"inventory: Enterprise IoT {data['inventory']['eiot']}, OT {data['inventory']['ot']}")
    for label, parts in data["added_from_sources"].items():
        click.echo(f"added from {label}: Enterprise IoT {parts['eiot']}, OT {parts['ot']} "
                   f"(already counted: {data['already_in_inventory'].get(label, 0)})")
    if data["excluded"]:
        click.echo("left out: " + ", ".join(f"{k} {v}" for k, v in data["excluded"].items()))
    click.echo(f"total ({coverage}): {data['total']} → suggested committed devices: "
               f"{data['suggested_committed_devices']}")


# -- endpoints --------------------------------------------------------------------------------


@click.group("endpoints")
def endpoints_group() -> None:
    """Devices managed by an endpoint agent (EDR), excluded from billing."""


@endpoints_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="The file is the whole list (forget earlier imports).")
@with_db
@as_option
def endpoints_import(file: str, replace: bool, db: str | None, database_url: str | None,
                     as_user: str | None) -> None:
    """Import an EDR export (CSV or JSON: MAC, IP, hostname, agent id) and flag matched devices."""
    from tapwatch.console import rbac
    from tapwatch.plans import endpoints
    from tapwatch.plans.access import PlanError

    def work(s: Any, actor: Any) -> Any:
        if not rbac.allowed(actor.role, rbac.DEVICES_WRITE):
            raise PlanError(f"{actor.name} ({actor.role}) may not change the inventory")
        return endpoints.import_file(s, file, actor, replace)

    result = _run(db, database_url, as_user, work)
    for err in result.errors:
        click.echo(f"tapwatch: warning: {err}", err=True)
    click.echo(f"imported {file}: {result.rows} rows, {result.entries_added} new entries, "
               f"{len(result.errors)} malformed; {result.flagged} devices managed by an endpoint agent "
               f"({result.newly_flagged} newly flagged, {result.unflagged} cleared)")
    if result.errors and not result.rows:
        sys.exit(2)
