"""Integrations' tables: alert forwarding rules and CMDB enrichment records.

A forwarding rule keeps its own cursor (the highest alert id it has dealt with), so
forwarding is a stage that reads the alerts table after detection wrote it, and a failed
delivery is retried on the next run from exactly where it stopped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tapwatch.store.models import Base

ACTIONS = ("syslog", "webhook", "email")


class ForwardingRule(Base):
    """Where alerts matching some conditions are sent, and how far that has got."""

    __tablename__ = "forwarding_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # conditions: an alert matches when every non-empty one holds
    min_severity: Mapped[str] = mapped_column(String(8), default="low")
    engines: Mapped[Any] = mapped_column(default=list)  # [] = any engine
    protocols: Mapped[Any] = mapped_column(default=list)  # [] = any protocol
    # action: syslog, webhook or email, with its settings (secrets included; never listed)
    action: Mapped[str] = mapped_column(String(16))
    config: Mapped[Any] = mapped_column(default=dict)
    # progress: every alert with id <= cursor was delivered or did not match
    cursor: Mapped[int] = mapped_column(default=0)
    delivered: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(1024))
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))


class CmdbRecord(Base):
    """One asset as a CMDB or network source (Meraki client list) describes it.

    Keyed by the addresses the source gives; `device_id` links it to the inventory device
    with that MAC (or IP) once one is seen, so records also describe assets not yet on the wire.
    """

    __tablename__ = "cmdb_records"
    __table_args__ = (UniqueConstraint("mac", "ip", name="uq_cmdb_records_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mac: Mapped[str] = mapped_column(String(17))  # "" when the source gives none
    ip: Mapped[str] = mapped_column(String(45))  # "" when the source gives none
    device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255))
    location: Mapped[str | None] = mapped_column(String(255))
    business_function: Mapped[str | None] = mapped_column(String(255))
    extra: Mapped[Any] = mapped_column(default=dict)  # other columns the source had
    source: Mapped[str] = mapped_column(String(32))  # cmdb-csv, meraki-csv
    source_file: Mapped[str] = mapped_column(String(1024))
    source_line: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime]
