"""Importing indicators of compromise: a plain list (one IP, CIDR or domain per line), a
CSV with an indicator column, or a STIX 2.1 bundle (indicator patterns and address/domain
objects). Kept in the database and applied to everything analyzed after the import."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tapwatch import clock
from tapwatch.store.detect_models import Indicator
from tapwatch.store.inventory import upsert_for

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_STIX_VALUE = re.compile(r"(ipv4-addr|ipv6-addr|domain-name|url):value\s*=\s*'((?:[^'\\]|\\.)*)'")
_CSV_COLUMNS = ("indicator", "value", "ioc", "ip", "domain", "address")


@dataclass
class ImportReport:
    path: str
    imported: int = 0
    problems: list[str] = field(default_factory=list)  # "file:line: why"


def classify(text: str) -> tuple[str, str] | None:
    """("ip" | "cidr" | "domain", normalised value), or None when it is neither."""
    value = text.strip().strip("[]").lower().rstrip(".")
    value = value.replace("[.]", ".").replace("(.)", ".")  # defanged forms in reports
    if not value:
        return None
    try:
        if "/" in value:
            return "cidr", str(ipaddress.ip_network(value, strict=False))
        return "ip", str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if value.startswith(("http://", "https://")):
        value = value.split("/", 3)[2].split(":")[0]
    return ("domain", value) if _DOMAIN.match(value) else None


def _plain(text: str, where: str, report: ImportReport) -> list[tuple[str, str, str | None]]:
    found: list[tuple[str, str, str | None]] = []
    for n, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        hit = classify(item)
        if hit is None:
            report.problems.append(f"{where}:{n}: not an IP address, network or domain: {item[:80]!r}")
        else:
            found.append((*hit, None))
    return found


def _csv(text: str, where: str, report: ImportReport) -> list[tuple[str, str, str | None]]:
    rows = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(rows, [])]
    column = next((header.index(c) for c in _CSV_COLUMNS if c in header), None)
    if column is None:
        report.problems.append(f"{where}:1: no indicator column (one of {', '.join(_CSV_COLUMNS)})")
        return []
    about = next((header.index(c) for c in ("description", "comment", "name") if c in header), None)
    found = []
    for n, row in enumerate(rows, 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if column >= len(row):
            report.problems.append(f"{where}:{n}: the row has no column {header[column]!r}")
            continue
        hit = classify(row[column])
        if hit is None:
            report.problems.append(f"{where}:{n}: not an IP address, network or domain: {row[column][:80]!r}")
        else:
            found.append((*hit, row[about].strip() if about is not None and about < len(row) else None))
    return found


def _stix(data: Any, where: str, report: ImportReport) -> list[tuple[str, str, str | None]]:
    if not (isinstance(data, dict) and data.get("type") == "bundle"
            and isinstance(data.get("objects"), list)):
        report.problems.append(f"{where}: not a STIX 2.1 bundle (type 'bundle' with 'objects')")
        return []
    found = []
    for i, obj in enumerate(data["objects"]):
        at = f"{where}: objects[{i}]"
        if not isinstance(obj, dict):
            report.problems.append(f"{at}: not an object")
            continue
        kind = obj.get("type")
        if kind in ("ipv4-addr", "ipv6-addr", "domain-name"):
            hit = classify(str(obj.get("value", "")))
            if hit is None:
                report.problems.append(f"{at}: {kind} without a usable value")
            else:
                found.append((*hit, obj.get("name") or obj.get("id")))
        elif kind == "indicator":
            pattern = obj.get("pattern")
            values = _STIX_VALUE.findall(pattern) if isinstance(pattern, str) else []
            if not values:
                report.problems.append(f"{at}: indicator pattern names no address or domain")
            for _, value in values:
                hit = classify(value)
                if hit is None:
                    report.problems.append(f"{at}: unusable value {value[:80]!r}")
                else:
                    found.append((*hit, obj.get("name") or obj.get("description")))
    return found


def import_file(session: Session, path: str | Path) -> ImportReport:
    """Read one indicator file into the database (idempotent: a value is stored once)."""
    path = Path(path)
    report = ImportReport(str(path))
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        report.problems.append(f"{path}: cannot read: {e}")
        return report
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            found = _stix(json.loads(text), str(path), report)
        except json.JSONDecodeError as e:
            report.problems.append(f"{path}:{e.lineno}: not valid JSON: {e.msg}")
            return report
    elif path.suffix.lower() == ".csv" or "," in stripped.split("\n", 1)[0]:
        found = _csv(text, str(path), report)
    else:
        found = _plain(text, str(path), report)
    unique = {(k, v): d for k, v, d in found}
    if unique:
        insert = upsert_for(session)
        now = clock.now().replace(tzinfo=None)
        stmt = insert(Indicator).values([
            {"kind": k, "value": v, "description": (d or None) and str(d)[:1024], "source": str(path),
             "imported_at": now} for (k, v), d in unique.items()])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["kind", "value"]))
    report.imported = len(unique)
    return report
