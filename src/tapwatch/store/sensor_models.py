"""Sensors: their registration and health on the console, their outbox on the sensor.

The console keeps one row per registered sensor (the token only as its SHA-256) and the
ids of every upload batch it applied, written in the same transaction as the batch's
data, so a batch sent twice is applied once, and the devices whose identity waits for the
end of a sensor's flush. The sensor keeps what it still has to send
in `sensor_outbox` inside its own inventory database, so a flush writes the local
inventory and the outbox in one transaction: a crash keeps both or neither.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tapwatch.store.models import Base


class Sensor(Base):
    """A sensor registered on the console, with the health it last reported."""

    __tablename__ = "sensors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    site: Mapped[str | None] = mapped_column(String(255))
    zone: Mapped[str | None] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]  # first connection; None = pending activation
    last_connected: Mapped[datetime | None]
    # health, as last reported
    version: Mapped[str | None] = mapped_column(String(32))
    hostname: Mapped[str | None] = mapped_column(String(255))
    interface: Mapped[str | None] = mapped_column(String(64))
    health_at: Mapped[datetime | None]  # when the sensor measured it
    last_traffic: Mapped[datetime | None]  # last health report with packets flowing
    packets_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    bytes_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    drops: Mapped[int] = mapped_column(default=0)  # kernel drops since the sensor started
    outbox_batches: Mapped[int] = mapped_column(default=0)
    outbox_bytes: Mapped[int] = mapped_column(default=0)
    outbox_dropped: Mapped[int] = mapped_column(default=0)  # batches the full outbox discarded
    health: Mapped[Any] = mapped_column(default=dict)  # the whole last report


class SensorBatch(Base):
    """An upload batch the console applied; the unique key makes re-sending harmless."""

    __tablename__ = "sensor_batches"
    __table_args__ = (UniqueConstraint("sensor_id", "batch_id", name="uq_sensor_batches_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(Integer, ForeignKey("sensors.id", ondelete="CASCADE"))
    batch_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    records: Mapped[int] = mapped_column(default=0)
    applied_at: Mapped[datetime]


class IdentityPending(Base):
    """A device whose identity waits for the end of a sensor's flush to be recomputed.

    A flush arrives as several batches (addresses, connections, evidence) that each touch
    the same devices; recomputing identity once, when the last batch is in, sees them all.
    A work queue without foreign keys (they would cost a check per queued row): the id of a
    device deleted meanwhile finds no device and is dropped with the rest.
    """

    __tablename__ = "sensor_identity_pending"

    sensor_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class OutboxBatch(Base):
    """A compressed batch waiting on the sensor for the console's acknowledgement."""

    __tablename__ = "sensor_outbox"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # send order
    batch_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, index=True)  # lowest is dropped first when full
    records: Mapped[int] = mapped_column(default=0)
    size: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    body: Mapped[bytes] = mapped_column(LargeBinary)


class SensorState(Base):
    """Small sensor-side values that must survive restarts (drop counters, watermarks)."""

    __tablename__ = "sensor_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any]
