"""`tapwatch vulns import`: feed files into the database, idempotently and incrementally.

A file may be NVD CVE JSON 2.0, a CSAF 2.0 advisory or the KEV catalog (plain or gzip;
directories are searched for *.json and *.json.gz). Every record is compared with what is
stored under the same source and key: the same digest is "unchanged", an older revision is
left alone, anything else replaces the record's rules. Each file is its own transaction, so
a file that cannot be read costs only itself, and a malformed record only itself.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tapwatch import clock
from tapwatch.store.db import sessions
from tapwatch.store.inventory import chunks
from tapwatch.store.vuln_models import Vulnerability, VulnRecord, VulnRule
from tapwatch.vulns.feeds import csaf, kev, nvd
from tapwatch.vulns.feeds.common import FeedRecord, Problem, VulnInfo

Parser = Callable[[Any, str], Iterator[FeedRecord | Problem]]
FORMATS: tuple[tuple[str, Callable[[Any], bool], Parser], ...] = (
    ("csaf", csaf.is_csaf, csaf.parse),
    ("kev", kev.is_kev, kev.parse),
    ("nvd", nvd.is_nvd, nvd.parse),
)


@dataclass
class FileResult:
    path: str
    format: str | None = None
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    older: int = 0
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None  # the whole file was unusable
    note: str | None = None  # skipped on purpose (e.g. a feed index)

    @property
    def records(self) -> int:
        return self.added + self.updated + self.unchanged + self.older


def utcnow() -> datetime:
    """The clock's time as the store keeps it: naive UTC."""
    return clock.now().astimezone(UTC).replace(tzinfo=None)


def feed_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The files named, and the *.json / *.json.gz files under directories named, in order."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from sorted(f for f in path.rglob("*") if f.is_file()
                              and (f.name.endswith(".json") or f.name.endswith(".json.gz")))
        else:
            yield path


def load_json(path: Path) -> Any:
    """The JSON of a plain or gzip file; ValueError says what is wrong and where."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"damaged gzip data ({e})") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"byte {e.start}: not UTF-8 text") from None


def import_files(engine: Engine, paths: Iterable[str | Path]) -> list[FileResult]:
    """Import every feed file; one transaction per file."""
    results = []
    for path in feed_files(paths):
        results.append(import_file(engine, path))
    return results


def import_file(engine: Engine, path: Path) -> FileResult:
    result = FileResult(str(path))
    try:
        doc = load_json(path)
    except OSError as e:
        result.error = f"{path}: cannot read ({e.strerror or e})"
        return result
    except ValueError as e:
        result.error = f"{path}: {e}"
        return result
    if isinstance(doc, dict) and isinstance(doc.get("feed"), dict) and "entry" in doc["feed"]:
        result.note = f"{path}: a ROLIE feed index (lists advisories, holds none): skipped"
        return result
    found = next(((name, parse) for name, detect, parse in FORMATS if detect(doc)), None)
    if found is None:
        result.error = (f"{path}: not a known feed format (expected NVD CVE JSON 2.0, "
                        "CSAF 2.0 or the CISA KEV catalog)")
        return result
    result.format, parse = found
    records: list[FeedRecord] = []
    for item in parse(doc, str(path)):
        if isinstance(item, Problem):
            result.problems.append(item)
        else:
            records.append(item)
    with sessions(engine).begin() as s:
        _store(s, records, str(path), result)
    return result


def _store(s: Session, records: list[FeedRecord], path: str, result: FileResult) -> None:
    now = utcnow()
    stored: dict[tuple[str, str], VulnRecord] = {}
    by_source: dict[str, list[str]] = {}
    for r in records:
        by_source.setdefault(r.source, []).append(r.key)
    for source, keys in by_source.items():
        for part in chunks(sorted(set(keys))):
            for found in s.scalars(select(VulnRecord).where(VulnRecord.source == source,
                                                            VulnRecord.key.in_(part))):
                stored[(found.source, found.key)] = found
    changed: list[tuple[FeedRecord, VulnRecord]] = []
    for rec in records:
        row: VulnRecord | None = stored.get((rec.source, rec.key))
        if row is not None and row.digest == rec.digest:
            result.unchanged += 1
            continue
        if row is not None and row.revision and rec.revision and rec.revision < row.revision:
            result.older += 1
            continue
        if row is None:
            row = VulnRecord(source=rec.source, key=rec.key)
            s.add(row)
            stored[(rec.source, rec.key)] = row
            result.added += 1
        else:
            s.execute(delete(VulnRule).where(VulnRule.record_id == row.id))
            result.updated += 1
        row.revision, row.digest, row.path = rec.revision, rec.digest, path
        row.title, row.imported_at = (rec.title or "")[:512] or None, now
        changed.append((rec, row))
    if not changed:
        return
    s.flush()
    cves = sorted({v.cve_id for rec, _ in changed for v in rec.vulns}
                  | {r.cve_id for rec, _ in changed for r in rec.rules})
    vulns: dict[str, Vulnerability] = {}
    for part in chunks(cves):
        for known in s.scalars(select(Vulnerability).where(Vulnerability.cve_id.in_(part))):
            vulns[known.cve_id] = known
    for rec, _ in changed:
        for info in rec.vulns:
            v: Vulnerability | None = vulns.get(info.cve_id)
            if v is None:
                v = Vulnerability(cve_id=info.cve_id, kev=False, references=[])
                s.add(v)
                vulns[info.cve_id] = v
            merge_vulnerability(v, info, rec.source)
    s.flush()
    rows = [{"record_id": row.id, "vulnerability_id": vulns[rule.cve_id].id, "source": rec.source,
             "vendor_key": key[:128], "vendor": rule.vendor[:255], "product": rule.product[:512],
             "versions": rule.versions[:512], "spec": rule.spec, "remediations": rule.remediations}
            for rec, row in changed for rule in rec.rules for key in sorted(rule.vendor_keys)]
    for start in range(0, len(rows), 2000):
        s.execute(insert(VulnRule), rows[start : start + 2000])


def merge_vulnerability(v: Vulnerability, info: VulnInfo, source: str) -> None:
    """Fold one feed's statements into the CVE: NVD's text and score win, others fill gaps."""
    authoritative = source == "nvd"
    if info.title and (v.title is None or (source == "csaf" and v.title == v.cve_id)):
        v.title = info.title[:512]
    if info.description and (authoritative or not v.description):
        v.description = info.description
    if info.cvss_score is not None and (authoritative or v.score_source != "nvd"):
        v.cvss_score, v.cvss_vector = info.cvss_score, (info.cvss_vector or None)
        v.cvss_version, v.score_source = info.cvss_version, source
    if info.cwe and (authoritative or not v.cwe):
        v.cwe = info.cwe[:64]
    if info.published:
        v.published = info.published
    if info.modified:
        v.modified = info.modified
    if info.references and (authoritative or not v.references):
        v.references = info.references
    if info.kev:
        v.kev = True
        v.kev_added = info.kev_added or v.kev_added
        v.kev_due = info.kev_due or v.kev_due
        v.kev_action = info.kev_action or v.kev_action
        v.kev_ransomware = info.kev_ransomware or v.kev_ransomware
