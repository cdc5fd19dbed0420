"""Alerts: what the detection engines raised, with lifecycle and evidence."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tapwatch.store.models import Base

STATUSES = ("new", "active", "closed")
SEVERITIES = ("high", "medium", "low")


class Alert(Base):
    """One alert; the same traffic on an open alert raises `count` and `last_detected`."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_key_status", "key", "status"),
        Index("ix_alerts_status_severity", "status", "severity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(512))  # type + what makes "the same traffic"
    type: Mapped[str] = mapped_column(String(64), index=True)  # stable catalog id
    title: Mapped[str] = mapped_column(String(255))
    engine: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(64))
    mitre: Mapped[str | None] = mapped_column(String(64))  # ATT&CK for ICS technique id
    status: Mapped[str] = mapped_column(String(8), default="new")
    protocol: Mapped[str | None] = mapped_column(String(32))
    src_mac: Mapped[str | None] = mapped_column(String(17))
    src_ip: Mapped[str | None] = mapped_column(String(45))
    dst_mac: Mapped[str | None] = mapped_column(String(17))
    dst_ip: Mapped[str | None] = mapped_column(String(45))
    src_device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    dst_device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    sensor: Mapped[str | None] = mapped_column(String(255))
    first_detected: Mapped[datetime]
    last_detected: Mapped[datetime] = mapped_column(index=True)
    count: Mapped[int] = mapped_column(default=1)
    details: Mapped[Any] = mapped_column(default=dict)
    # [{file_id, packet}]: the triggering packets, for the pcap excerpt
    evidence: Mapped[Any] = mapped_column(default=list)
    closed_at: Mapped[datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(String(16))  # learn, mute, manual, expired
