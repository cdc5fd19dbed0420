"""Command groups: `tapwatch vulns`, `recommendations`, `risk` and `report risk`.

Every read command refreshes the device↔CVE matches first, so what it prints follows the
latest feeds and the latest identification without a separate step.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy.engine import Engine

from tapwatch import clock
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Device
from tapwatch.terminal import print_table
from tapwatch.vulns import findings as findings_mod
from tapwatch.vulns import importer, matcher, recommendations, report, risk

FORMATS = click.Choice(["table", "json", "csv"])
db_option = click.option(
    "--db", "db", envvar="TAPWATCH_DB", default=None, metavar="PATH|URL",
    help="Inventory database (default ./tapwatch.db; env TAPWATCH_DB).",
)
weights_option = click.option(
    "--weights", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Risk weights overriding the built-in ones (YAML; env TAPWATCH_RISK_WEIGHTS).",
)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"tapwatch: error: {message}", err=True)
    sys.exit(code)


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> None:
    out = csv.writer(sys.stdout)
    out.writerow(columns)
    for r in rows:
        out.writerow(["; ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
                      for v in (r.get(c) for c in columns)])


def _weights(path: str | None) -> dict[str, Any]:
    try:
        return risk.load_weights(path)
    except (OSError, ValueError) as e:
        _fail(str(e))
        raise


def _findings(engine: Engine) -> dict[int, findings_mod.DeviceFindings]:
    with matcher.refreshed(engine) as s:
        return findings_mod.gather(s)


# -- vulns ----------------------------------------------------------------------------------


@click.group()
def vulns() -> None:
    """Vulnerabilities: import feeds (NVD, CSAF, KEV) and list what devices they affect."""


@vulns.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
def vulns_import(paths: tuple[str, ...], db: str | None) -> None:
    """Import NVD CVE JSON 2.0, CSAF 2.0 advisories or the CISA KEV catalog (files or directories)."""
    for p in paths:
        if not Path(p).exists():
            _fail(f"{p}: no such file or directory")
    engine = open_engine(db)
    results = importer.import_files(engine, paths)
    failed = 0
    for r in results:
        for problem in r.problems:
            click.echo(f"tapwatch: warning: {problem}: record skipped", err=True)
        if r.error:
            failed += 1
            click.echo(f"tapwatch: error: {r.error}", err=True)
        elif r.note:
            click.echo(f"tapwatch: note: {r.note}", err=True)
    with sessions(engine).begin() as s:
        matched = matcher.refresh(s)
    with sessions(engine)() as s:
        devices = len({m["device_id"] for m in matcher.list_matches(s)})
    total = {k: sum(getattr(r, k) for r in results) for k in ("added", "updated", "unchanged", "older")}
    problems = sum(len(r.problems) for r in results)
    click.echo(f"{len(results)} file{'s' if len(results) != 1 else ''}: {total['added']} records added, "
               f"{total['updated']} updated, {total['unchanged']} unchanged"
               + (f", {total['older']} older than stored (kept stored)" if total["older"] else "")
               + f", {problems} skipped as malformed"
               + (f", {failed} file{'s' if failed != 1 else ''} unreadable" if failed else "")
               + f"; {matched} device vulnerabilities on {devices} devices")
    if failed:
        sys.exit(2)


VULN_COLUMNS = ["device_id", "device_ip", "device_name", "vendor", "model", "firmware", "cve",
                "cvss_score", "severity", "cvss_vector", "kev", "kev_due", "confidence",
                "version_check", "source", "product", "affected_versions", "remediation", "title"]


@vulns.command("list")
@db_option
@click.option("--device", "device_id", type=int, default=None, help="Only this device.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def vulns_list(db: str | None, device_id: int | None, fmt: str) -> None:
    """List each device's CVEs with score, vector, KEV flag, confidence and remediation."""
    engine = open_engine(db)
    with sessions(engine).begin() as s:
        if device_id is not None and s.get(Device, device_id) is None:
            _fail(f"no device with id {device_id}")
        matcher.refresh(s)
    with sessions(engine)() as s:
        rows = matcher.list_matches(s, device_id)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if fmt == "csv":
        _csv(rows, VULN_COLUMNS)
        return
    devices = len({r["device_id"] for r in rows})
    table = Table(title=f"{len(rows)} vulnerabilities on {devices} device{'s' if devices != 1 else ''}",
                  title_justify="left")
    for col in ("Device", "IP", "Product / firmware", "CVE", "CVSS", "KEV", "Confidence",
                "Affected", "Remediation"):
        table.add_column(col, overflow="fold", max_width=60 if col == "Remediation" else None)
    for r in rows:
        table.add_row(str(r["device_id"]), r["device_ip"] or "",
                      " ".join(x for x in (r["vendor"], r["model"], r["firmware"]) if x),
                      r["cve"], "" if r["cvss_score"] is None else f"{r['cvss_score']:.1f} {r['severity']}",
                      "yes" if r["kev"] else "", r["confidence"], r["affected_versions"],
                      (r["remediation"] or "")[:200])
    print_table(table)


# -- recommendations ------------------------------------------------------------------------


@click.group("recommendations")
def recommendations_group() -> None:
    """What to fix: the recommendations catalog evaluated for every device."""


@recommendations_group.command("list")
@db_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def recommendations_list(db: str | None, fmt: str) -> None:
    """List recommendations with their unhealthy and healthy devices."""
    try:
        catalog = recommendations.load_catalog()
    except (OSError, ValueError) as e:
        _fail(str(e))
        return
    results = recommendations.evaluate(_findings(open_engine(db)), catalog)
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
        return
    if fmt == "csv":
        flat = [{"id": r["id"], "title": r["title"], "severity": r["severity"], "status": r["status"],
                 "unhealthy_count": r["unhealthy_count"], "healthy_count": r["healthy_count"],
                 "unhealthy_device_ids": [d["device_id"] for d in r["unhealthy"]],
                 "healthy_device_ids": [d["device_id"] for d in r["healthy"]]} for r in results]
        _csv(flat, list(flat[0]) if flat else ["id", "title", "severity", "status"])
        return
    table = Table(title=f"{len(results)} recommendations", title_justify="left")
    for col in ("Recommendation", "Severity", "Unhealthy", "Healthy", "Unhealthy devices (why)"):
        table.add_column(col, overflow="fold")
    for r in results:
        devices = "; ".join(f"{d['ip'] or d['device_id']}: {', '.join(d['reasons'])}"
                            for d in r["unhealthy"][:5]) + (" …" if r["unhealthy_count"] > 5 else "")
        table.add_row(r["title"], r["severity"], str(r["unhealthy_count"]), str(r["healthy_count"]), devices)
    print_table(table)


# -- risk -----------------------------------------------------------------------------------


def _risks(db: str | None, weights: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                             dict[int, findings_mod.DeviceFindings]]:
    found = _findings(open_engine(db))
    devices = risk.device_risks(found, weights)
    return devices, risk.site_risks(devices, weights), found


@click.command("risk")
@db_option
@click.option("--site", "by_site", is_flag=True, help="One row per site instead of per device.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@weights_option
def risk_command(db: str | None, by_site: bool, fmt: str, weights: str | None) -> None:
    """Security score 0-100 per device (or per site): secure >=90, needs improvement 70-89, vulnerable <70."""
    w = _weights(weights)
    devices, sites, _ = _risks(db, w)
    rows = sites if by_site else devices
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if fmt == "csv":
        if by_site:
            flat = [{**{k: v for k, v in s.items() if k not in ("bands", "worst")},
                     **{f"devices_{b.replace(' ', '_')}": n for b, n in s["bands"].items()}} for s in sites]
            _csv(flat, list(flat[0]) if flat else ["site", "score", "band"])
        else:
            flat = [{**{k: v for k, v in d.items() if k != "points_lost"},
                     **{f"points_{k}": v for k, v in d["points_lost"].items()}} for d in devices]
            _csv(flat, list(flat[0]) if flat else ["device_id", "score", "band"])
        return
    if by_site:
        table = Table(title=f"{len(sites)} sites", title_justify="left")
        for col in ("Site", "Score", "Band", "Devices", "Secure", "Needs impr.", "Vulnerable", "CVEs",
                    "Worst devices"):
            table.add_column(col)
        for s in sites:
            table.add_row(s["site"], str(s["score"]), s["band"], str(s["devices"]),
                          *(str(s["bands"][b]) for b in ("secure", "needs improvement", "vulnerable")),
                          str(s["cves"]), ", ".join(f"{w['ip'] or w['device_id']} ({w['score']})"
                                                    for w in s["worst"][:3]))
    else:
        table = Table(title=f"{len(devices)} devices, lowest score first", title_justify="left")
        for col in ("ID", "IP", "Name", "Type", "Vendor", "Score", "Band", "CVEs", "Why"):
            table.add_column(col, overflow="fold", max_width=80 if col == "Why" else None)
        for d in devices:
            table.add_row(str(d["device_id"]), d["ip"] or "", d["name"] or "", d["type"] or "",
                          d["vendor"] or "", str(d["score"]), d["band"], str(d["cves"]),
                          "; ".join(d["reasons"]))
    print_table(table)


# -- report ---------------------------------------------------------------------------------


@click.group("report")
def report_group() -> None:
    """Reports as self-contained files."""


@report_group.command("risk")
@db_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the HTML page.")
@weights_option
def report_risk(db: str | None, output: str, weights: str | None) -> None:
    """One HTML page: scores, charts (distribution, vulnerable devices, insecure protocols), what to fix."""
    w = _weights(weights)
    devices, sites, found = _risks(db, w)
    recs = recommendations.evaluate(found)
    vulns_rows = [v for f in found.values() for v in f.vulns]
    generated = clock.now().strftime("%Y-%m-%d %H:%M UTC")
    page = report.render(devices, sites, recs, vulns_rows, w, generated)
    Path(output).write_text(page, encoding="utf-8")
    click.echo(f"risk report: {output} ({len(devices)} devices, {len(vulns_rows)} device vulnerabilities)")
