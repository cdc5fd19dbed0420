"""The inventory schema: ingested files, devices, the addresses that make them, connections.

Addresses are the raw observations (one per MAC+IP coupling, or MAC alone); a device
groups the addresses of one host, and remote endpoints behind a gateway are addresses
with no device. Every change to this file needs an Alembic migration in migrations/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    literal_column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {int: BigInteger, datetime: DateTime(timezone=False), Any: JSON}


class IngestedFile(Base):
    """A capture already analyzed, remembered by content hash so re-analysis adds nothing."""

    __tablename__ = "ingested_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int]
    head_hash: Mapped[str] = mapped_column(String(32), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    sensor: Mapped[str] = mapped_column(String(255))
    packets: Mapped[int]
    first_seen: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    ingested_at: Mapped[datetime]


# what the console's free-text search matches (tapwatch.console.queries), and what its index covers
SEARCH_COLUMNS = ("name", "ip", "mac", "vendor", "model", "os")


class Device(Base):
    """One host: a unique MAC+IPv4 coupling, or a MAC (or an IP) alone when that is all there is."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("key_mac", "key_ip", name="uq_devices_key"),
        # what the console's inventory filters, sorts and lists drop-down values by
        Index("ix_devices_type", "type"),
        Index("ix_devices_device_class", "device_class"),
        Index("ix_devices_vendor", "vendor"),
        Index("ix_devices_zone", "zone"),
        Index("ix_devices_name", "name"),
        Index("ix_devices_first_seen", "first_seen"),
        # the free-text search's `lower(col) LIKE '%text%'`: pg_trgm trigrams on PostgreSQL,
        # made by migration 0012x only when the extension is there (SQLite has no such index)
        Index("ix_devices_search", *(func.lower(literal_column(c)).label(c) for c in SEARCH_COLUMNS),
              postgresql_using="gin", postgresql_ops=dict.fromkeys(SEARCH_COLUMNS, "gin_trgm_ops")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_mac: Mapped[str] = mapped_column(String(17))
    key_ip: Mapped[str] = mapped_column(String(45))
    mac: Mapped[str | None] = mapped_column(String(17), index=True)
    ip: Mapped[str | None] = mapped_column(String(45), index=True)
    is_gateway: Mapped[bool] = mapped_column(Boolean, default=False)
    sensor: Mapped[str] = mapped_column(String(255))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime] = mapped_column(index=True)
    packets_sent: Mapped[int] = mapped_column(default=0)
    packets_received: Mapped[int] = mapped_column(default=0)
    bytes_sent: Mapped[int] = mapped_column(default=0)
    bytes_received: Mapped[int] = mapped_column(default=0)
    vlans: Mapped[Any] = mapped_column(default=list)
    protocols: Mapped[Any] = mapped_column(default=list)
    name: Mapped[str | None] = mapped_column(String(255))
    vendor: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(64))
    device_class: Mapped[str | None] = mapped_column(String(8))  # IT, IoT or OT
    purdue_level: Mapped[int | None] = mapped_column(Integer)  # inferred from the type
    # controller details, as the device's own protocol states them
    serial: Mapped[str | None] = mapped_column(String(255))
    module: Mapped[str | None] = mapped_column(String(255))
    rack_slot: Mapped[str | None] = mapped_column(String(32))
    plc_mode: Mapped[str | None] = mapped_column(String(32))
    # values a person set; identification never overwrites them
    overrides: Mapped[Any] = mapped_column(default=dict)
    # management: what people decide about the device (detection and the console read these)
    authorized: Mapped[bool] = mapped_column(Boolean, default=True)
    is_new: Mapped[bool] = mapped_column(Boolean, default=False)  # first seen after learning
    importance: Mapped[str] = mapped_column(String(8), default="normal")  # low, normal, high
    programming_device: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(String(1024))
    location: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[Any] = mapped_column(default=list)
    site: Mapped[str | None] = mapped_column(String(255), index=True)
    zone: Mapped[str | None] = mapped_column(String(255))
    endpoint_agent: Mapped[str | None] = mapped_column(String(255))  # agent id when EDR-managed
    model: Mapped[str | None] = mapped_column(String(255))
    os: Mapped[str | None] = mapped_column(String(255))
    firmware: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Address(Base):
    """One observed coupling (mac, ip); '' stands for "none" in either column."""

    __tablename__ = "addresses"
    __table_args__ = (UniqueConstraint("mac", "ip", name="uq_addresses_mac_ip"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str] = mapped_column(String(45), index=True)
    device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    device: Mapped[Device | None] = relationship()
    role: Mapped[str] = mapped_column(String(16))  # "device" or "remote"
    flags: Mapped[int] = mapped_column(Integer, default=0)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    packets_sent: Mapped[int] = mapped_column(default=0)
    packets_received: Mapped[int] = mapped_column(default=0)
    bytes_sent: Mapped[int] = mapped_column(default=0)
    bytes_received: Mapped[int] = mapped_column(default=0)
    vlans: Mapped[Any] = mapped_column(default=list)
    protocols: Mapped[Any] = mapped_column(default=list)


class Connection(Base):
    """Client and server endpoints, transport and server port, with traffic each way."""

    __tablename__ = "connections"
    __table_args__ = (
        UniqueConstraint(
            "client_mac", "client_ip", "server_mac", "server_ip", "transport", "server_port",
            name="uq_connections_key",
        ),
        Index("ix_connections_server", "server_ip", "server_port"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_mac: Mapped[str] = mapped_column(String(17))
    client_ip: Mapped[str] = mapped_column(String(45))
    server_mac: Mapped[str] = mapped_column(String(17))
    server_ip: Mapped[str] = mapped_column(String(45))
    transport: Mapped[str] = mapped_column(String(16))
    server_port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(32))
    client_device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    server_device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    packets_c2s: Mapped[int] = mapped_column(default=0)
    bytes_c2s: Mapped[int] = mapped_column(default=0)
    packets_s2c: Mapped[int] = mapped_column(default=0)
    bytes_s2c: Mapped[int] = mapped_column(default=0)


class Fact(Base):
    """A piece of identity evidence about one address, as seen on the wire."""

    __tablename__ = "facts"
    __table_args__ = (
        UniqueConstraint("mac", "ip", "attribute", "value", "source", name="uq_facts_key"),
        Index("ix_facts_address", "mac", "ip"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str] = mapped_column(String(45))
    attribute: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(1024))
    source: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(default=1)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class ProtocolError(Base):
    """Malformed protocol data seen from an address, counted per protocol."""

    __tablename__ = "protocol_errors"
    __table_args__ = (UniqueConstraint("mac", "ip", "protocol", name="uq_protocol_errors_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str] = mapped_column(String(45))
    protocol: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(default=0)
    last_reason: Mapped[str] = mapped_column(String(255))


class Event(Base):
    """Something one device did to another (a PLC stop, a program download, …), with evidence."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_time", "kind", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32))
    protocol: Mapped[str] = mapped_column(String(32))
    src_mac: Mapped[str] = mapped_column(String(17))
    src_ip: Mapped[str] = mapped_column(String(45))
    dst_mac: Mapped[str] = mapped_column(String(17))
    dst_ip: Mapped[str] = mapped_column(String(45))
    src_device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    dst_device_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    file_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("ingested_files.id", ondelete="SET NULL")
    )
    packet: Mapped[int]  # packet number in that file, for the evidence
    details: Mapped[Any] = mapped_column(default=dict)
    count: Mapped[int] = mapped_column(default=1)  # identical operations folded into this one
    last_ts: Mapped[datetime | None]
