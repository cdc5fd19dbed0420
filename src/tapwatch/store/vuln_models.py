"""Vulnerability tables: imported feed records, CVEs, affected-product rules, device matches.

Feeds are imported from files (the sensor may have no internet). Each feed record (an NVD
CVE, a CSAF advisory, a KEV entry) is remembered with a digest so a re-import adds nothing
and a newer revision replaces exactly what the older one contributed. Matches of devices to
CVEs are derived data, refreshed from the inventory and the rules whenever they are read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tapwatch.store.models import Base


class VulnRecord(Base):
    """One imported feed record: what it is, which revision, and the digest of its content."""

    __tablename__ = "vuln_records"
    __table_args__ = (UniqueConstraint("source", "key", name="uq_vuln_records_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(8))  # nvd, csaf, kev
    key: Mapped[str] = mapped_column(String(255))  # CVE id, advisory tracking id
    revision: Mapped[str | None] = mapped_column(String(64))  # lastModified, release date, …
    digest: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(4096))
    title: Mapped[str | None] = mapped_column(String(512))
    imported_at: Mapped[datetime]


class Vulnerability(Base):
    """One CVE (or advisory-only vulnerability), merged from every feed that mentions it."""

    __tablename__ = "vulnerabilities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cve_id: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str | None] = mapped_column(String(512))
    description: Mapped[str | None] = mapped_column(Text)
    cvss_score: Mapped[float | None] = mapped_column(Float)
    cvss_vector: Mapped[str | None] = mapped_column(String(255))
    cvss_version: Mapped[str | None] = mapped_column(String(8))
    score_source: Mapped[str | None] = mapped_column(String(8))  # nvd wins over csaf
    cwe: Mapped[str | None] = mapped_column(String(64))
    published: Mapped[datetime | None]
    modified: Mapped[datetime | None]
    kev: Mapped[bool] = mapped_column(Boolean, default=False)
    kev_added: Mapped[str | None] = mapped_column(String(10))  # dates as the catalog gives them
    kev_due: Mapped[str | None] = mapped_column(String(10))
    kev_action: Mapped[str | None] = mapped_column(String(1024))
    kev_ransomware: Mapped[str | None] = mapped_column(String(16))
    references: Mapped[Any] = mapped_column(default=list)  # [{url, tags}]


class VulnRule(Base):
    """One affected product of one vulnerability, as one feed record states it."""

    __tablename__ = "vuln_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("vuln_records.id", ondelete="CASCADE"), index=True
    )
    vulnerability_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("vulnerabilities.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[str] = mapped_column(String(8))
    vendor_key: Mapped[str] = mapped_column(String(128), index=True)  # normalized vendor
    vendor: Mapped[str] = mapped_column(String(255))
    product: Mapped[str] = mapped_column(String(512))
    versions: Mapped[str] = mapped_column(String(512))  # affected versions, as the feed says
    spec: Mapped[Any] = mapped_column(default=dict)  # what the matcher evaluates
    remediations: Mapped[Any] = mapped_column(default=list)  # [{category, details, url}]


class DeviceVulnerability(Base):
    """A device affected by a vulnerability: which product entry matched, and how surely."""

    __tablename__ = "device_vulnerabilities"
    __table_args__ = (
        UniqueConstraint("device_id", "vulnerability_id", name="uq_device_vulnerabilities"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    vulnerability_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("vulnerabilities.id", ondelete="CASCADE"), index=True
    )
    confidence: Mapped[str] = mapped_column(String(8))  # firmware or model
    version_check: Mapped[str] = mapped_column(String(24))  # in_range, all_versions, …
    source: Mapped[str] = mapped_column(String(8))
    product: Mapped[str] = mapped_column(String(512))
    versions: Mapped[str] = mapped_column(String(512))
    remediation: Mapped[str | None] = mapped_column(String(2048))
    first_matched: Mapped[datetime]
    last_matched: Mapped[datetime]
