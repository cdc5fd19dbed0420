"""Importing NVD, CSAF and KEV files: what is stored, idempotence, increments, bad records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from sqlalchemy import func, select

from tapwatch.store.db import open_engine, sessions
from tapwatch.store.vuln_models import Vulnerability, VulnRecord, VulnRule
from tapwatch.vulns import importer

FEEDS = Path(__file__).parent / "data" / "vulnfeeds"
NVD, CSAF, KEV = FEEDS / "nvd-sample.json", FEEDS / "csaf-sample.json", FEEDS / "kev-sample.json"


def _vuln(engine, cve: str) -> Vulnerability:  # type: ignore[no-untyped-def]
    with sessions(engine)() as s:
        v = s.scalar(select(Vulnerability).where(Vulnerability.cve_id == cve))
        assert v is not None, cve
        return v


def _count(engine, model) -> int:  # type: ignore[no-untyped-def]
    with sessions(engine)() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_three_formats_with_bad_records_reported_and_the_rest_kept(tmp_path) -> None:
    engine = open_engine(str(tmp_path / "t.db"))
    nvd, csaf, kev = importer.import_files(engine, [NVD, CSAF, KEV])
    assert (nvd.format, csaf.format, kev.format) == ("nvd", "csaf", "kev")
    # NVD: the CVE with a broken CPE is skipped, named by location and id; three imported
    assert nvd.added == 3
    assert [str(p) for p in nvd.problems] == [
        f"{NVD}: $.vulnerabilities[2].cve.configurations[0].nodes[0].cpeMatch[0].criteria "
        "(CVE-2099-0003): not a CPE 2.3 name: 'cpe:/o:siemens:broken'"]
    # CSAF: one advisory; its two bad vulnerability entries are skipped, the other two kept
    assert csaf.added == 1
    assert sorted(p.location for p in csaf.problems) == [
        "$.vulnerabilities[2].product_status.known_affected[0]",
        "$.vulnerabilities[3].scores[0].cvss_v3.baseScore"]
    assert kev.added == 2 and [p.location for p in kev.problems] == ["$.vulnerabilities[1].cveID"]
    with sessions(engine)() as s:
        cves = set(s.scalars(select(Vulnerability.cve_id)))
    assert cves == {"CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0004", "CVE-2099-0005",
                    "CVE-2099-0099"}

    first = _vuln(engine, "CVE-2099-0001")
    assert (first.cvss_score, first.score_source) == (7.5, "nvd")  # the primary metric
    assert first.cvss_vector == "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H" and first.cwe == "CWE-400"
    assert first.kev and first.kev_due == "2099-03-03" and first.kev_ransomware == "Known"
    # NVD's own CISA fields flag KEV too
    assert _vuln(engine, "CVE-2099-0002").kev
    # NVD and CSAF both score CVE-2099-0004: NVD's wins, whatever the import order
    both = _vuln(engine, "CVE-2099-0004")
    assert (both.cvss_score, both.score_source) == (7.5, "nvd")
    assert both.title == "Missing authentication on the configuration service"
    csaf_only = _vuln(engine, "CVE-2099-0005")
    assert (csaf_only.cvss_score, csaf_only.score_source) == (5.3, "csaf")


def test_csaf_rules_keep_vendor_versions_and_remediations_per_product(tmp_path) -> None:
    engine = open_engine(str(tmp_path / "t.db"))
    importer.import_files(engine, [CSAF])
    with sessions(engine)() as s:
        rules = {r.product: r for r in s.scalars(select(VulnRule).where(VulnRule.source == "csaf"))}
    eg200 = rules["EG-200 Edge Gateway"]
    assert eg200.vendor == "Acme Corp., Inc." and eg200.vendor_key == "acme"
    assert eg200.versions == ">= V2.0.0 and < V2.1.0.20"
    assert [r["category"] for r in eg200.remediations] == ["vendor_fix", "mitigation"]
    assert eg200.remediations[0]["url"] == "https://acme.example/fw"
    assert [r["category"] for r in rules["EG-100 Edge Gateway"].remediations] == ["mitigation",
                                                                                   "no_fix_planned"]
    s7 = rules["SIMATIC S7-1200 CPU 1214C DC/DC/DC (6ES7214-1AG40-0XB0)"]
    assert s7.vendor_key == "siemens" and s7.spec["model_numbers"] == ["6ES7214-1AG40-0XB0"]


def test_reimport_is_idempotent_and_a_newer_revision_replaces_the_record(tmp_path) -> None:
    engine = open_engine(str(tmp_path / "t.db"))
    importer.import_files(engine, [NVD, CSAF, KEV])
    rules_before = _count(engine, VulnRule)
    again = importer.import_files(engine, [NVD, CSAF, KEV])
    assert [(r.added, r.updated) for r in again] == [(0, 0)] * 3
    assert [r.unchanged for r in again] == [3, 1, 2]
    assert _count(engine, VulnRule) == rules_before and _count(engine, VulnRecord) == 6

    doc = json.loads(NVD.read_text())
    cve = doc["vulnerabilities"][0]["cve"]
    cve["lastModified"] = "2099-03-01T00:00:00.000"
    cve["metrics"]["cvssMetricV31"][0]["cvssData"]["baseScore"] = 8.6
    cve["configurations"][0]["nodes"][0]["cpeMatch"][0]["versionEndExcluding"] = "4.6.0"
    newer = tmp_path / "nvd-newer.json.gz"  # compressed, as NVD distributes its feeds
    newer.write_bytes(gzip.compress(json.dumps({"format": "NVD_CVE", "vulnerabilities": [
        {"cve": cve}]}).encode()))
    (result,) = importer.import_files(engine, [newer])
    assert (result.updated, result.added) == (1, 0)
    assert _vuln(engine, "CVE-2099-0001").cvss_score == 8.6
    with sessions(engine)() as s:
        versions = list(s.scalars(select(VulnRule.versions).join(Vulnerability).where(
            Vulnerability.cve_id == "CVE-2099-0001")))
    assert versions == ["< 4.6.0"]  # the old rule is gone, not duplicated
    assert _count(engine, VulnRule) == rules_before

    # the original, older file again: stored data stays
    (older,) = importer.import_files(engine, [NVD])
    assert older.older == 1 and older.updated == 0
    assert _vuln(engine, "CVE-2099-0001").cvss_score == 8.6


def test_unusable_files_are_errors_and_do_not_stop_the_others(tmp_path) -> None:
    engine = open_engine(str(tmp_path / "t.db"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"vulnerabilities": [\n  {"cve": {"id": "CVE-2099-0001",}\n]}\n')
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}')
    feed_dir = tmp_path / "feeds"
    feed_dir.mkdir()
    (feed_dir / "kev.json").write_text(KEV.read_text())
    results = importer.import_files(engine, [broken, other, feed_dir])
    assert results[0].error == f"{broken}: line 2 column 34: not valid JSON (Expecting property name " \
                               "enclosed in double quotes)"
    assert results[1].error is not None and "not a known feed format" in results[1].error
    assert results[2].added == 2
