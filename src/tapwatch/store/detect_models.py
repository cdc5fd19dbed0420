"""What detection remembers between analyses: the learned baseline, the learning period,
the user's indicators of compromise and exclusion rules (maintenance windows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tapwatch.store.models import Base


class BaselineEntry(Base):
    """One thing that is normal: a connection, a protocol between two devices, a function
    code a client uses on a server, the traffic volume of a connection, a gap in traffic.
    `key` is the kind's own text form (see detect.baseline); `value` a learned magnitude."""

    __tablename__ = "baseline_entries"
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_baseline_kind_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    key: Mapped[str] = mapped_column(String(512))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    count: Mapped[int] = mapped_column(default=1)
    value: Mapped[float] = mapped_column(Float, default=0.0)
    source: Mapped[str] = mapped_column(String(16), default="learning")  # or "alert" (learned)


class LearningState(Base):
    """The one learning period of this database, in capture time (see detect.learning)."""

    __tablename__ = "learning_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]  # None: until quiet, or stopped by hand
    ended_at: Mapped[datetime | None]  # when learning actually ended (capture time)
    ended_by: Mapped[str | None] = mapped_column(String(16))  # date, quiet, hand, no-learn
    quiet_days: Mapped[int] = mapped_column(Integer, default=3)
    quiet_max_new: Mapped[int] = mapped_column(Integer, default=5)  # new entries a quiet day allows
    # {"2024-01-02": new baseline entries that day}: the quiet-period test reads it
    daily_new: Mapped[Any] = mapped_column(default=dict)


class Indicator(Base):
    """A known-malicious IP address or domain the user imported."""

    __tablename__ = "indicators"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_indicators_kind_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "ip", "cidr" or "domain"
    value: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(1024))
    source: Mapped[str] = mapped_column(String(1024))  # file it came from
    imported_at: Mapped[datetime]


class Exclusion(Base):
    """Alerts that match are not stored: a maintenance window, a noisy device, a test sensor."""

    __tablename__ = "alert_exclusions"
    __table_args__ = (Index("ix_alert_exclusions_enabled", "enabled"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    starts_at: Mapped[datetime | None]  # capture time window (either end open)
    ends_at: Mapped[datetime | None]
    address: Mapped[str | None] = mapped_column(String(64))  # IP, MAC or CIDR subnet, either side
    alert_type: Mapped[str | None] = mapped_column(String(64))
    sensor: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
