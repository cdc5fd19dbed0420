"""Real CISA feeds (../shared/vulnfeeds): every CSAF advisory and the KEV catalog import, and the
demo's S7-1200 (CPU 1214C, firmware V4.2.3) gets exactly the advisories whose ranges hold V4.2.3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tapwatch.store.db import open_engine, sessions
from tapwatch.store.vuln_models import Vulnerability
from tapwatch.vulns import importer, matcher
from tapwatch.vulns.versions import parse_range, parse_version

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "vulnfeeds"
S7_FILES = ["icsa-17-129-02.json", "icsa-17-339-01.json", "icsa-18-226-02.json", "icsa-18-317-05.json",
            "icsa-19-283-02.json", "icsa-19-318-02.json", "icsa-20-042-05.json", "icsa-21-152-01.json",
            "icsa-22-104-05.json", "icsa-24-284-01.json"]


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (SHARED / "csaf").is_dir() or not (SHARED / "kev.json").is_file():
        pytest.fail(f"the shared feeds are missing: {SHARED}")
    return SHARED


def test_every_cisa_advisory_and_the_kev_catalog_import(shared, tmp_path) -> None:
    engine = open_engine(str(tmp_path / "t.db"))
    results = importer.import_files(engine, [shared / "csaf", shared / "kev.json"])
    by_format: dict[str | None, int] = {}
    for r in results:
        assert r.error is None, r.error
        by_format[r.format] = by_format.get(r.format, 0) + 1
    advisories = len(list((shared / "csaf").glob("*.json"))) - 1  # all but the feed index
    assert by_format == {"csaf": advisories, "kev": 1, None: 1}  # None: the ROLIE index, skipped
    assert [r.note for r in results if r.format is None][0].endswith("holds none): skipped")
    kev = next(r for r in results if r.format == "kev")
    assert kev.added == len(json.loads((shared / "kev.json").read_text())["vulnerabilities"])
    with sessions(engine)() as s:
        eternal_blue = s.scalar(select(Vulnerability).where(Vulnerability.cve_id == "CVE-2017-0144"))
    assert eternal_blue is not None and eternal_blue.kev and eternal_blue.kev_added
    engine.dispose()


def test_the_demo_s7_1200_against_real_siemens_advisories(shared, tmp_path) -> None:
    from test_vulns_matching import S7, add_device  # the same device rows as the matcher tests

    engine = open_engine(str(tmp_path / "t.db"))
    with sessions(engine).begin() as s:
        plc = add_device(s, 1, firmware="V4.2.3", facts=(("order_number", "6ES7 214-1AG40-0XB0"),), **S7)
    results = importer.import_files(engine, [shared / "csaf" / f for f in S7_FILES])
    assert all(r.error is None and not r.problems for r in results)
    again = importer.import_files(engine, [shared / "csaf" / f for f in S7_FILES])
    assert sum(r.unchanged for r in again) == len(S7_FILES)
    with sessions(engine).begin() as s:
        matcher.refresh(s)
    with sessions(engine)() as s:
        rows = {r["cve"]: r for r in matcher.list_matches(s, plc)}
    engine.dispose()
    firmware = parse_version("V4.2.3")
    assert firmware is not None
    for r in rows.values():
        if r["confidence"] == "firmware":
            rng = parse_range(r["affected_versions"])
            assert rng is not None and rng.contains(firmware), r
    # fixed before V4.2.3 (ICSA-17-129-02: < V4.2.1): not listed
    assert "CVE-2017-2680" not in rows
    assert "CVE-2017-2681" not in rows
    assert rows["CVE-2019-10936"]["confidence"] == "firmware"  # ICSA-19-283-02, vers:all/<V4.4.0
    assert rows["CVE-2020-15782"]["confidence"] == "firmware"  # ICSA-21-152-01, < V4.5.0
    # ICSA-24-284-01 names this exact part (6ES7214-1AG40-0XB0) for all versions
    assert rows["CVE-2024-46886"]["version_check"] == "all_versions"
