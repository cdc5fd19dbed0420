"""Plans and billing tables: subscriptions, who holds which role on them, plans, the billing
ledger, daily billable-count snapshots and the imported endpoint-agent list.

A plan's terms (kind, coverage, committed devices) live in the ledger as contiguous periods,
so a change that takes effect later, or a cancellation, is one row closing and another
opening: billing reads the periods pro rata, and the state at any time is the period that
contains it. The rules that write these tables are in tapwatch.plans.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tapwatch.store.models import Base


class Subscription(Base):
    """A billing scope of the console; the sensors assigned to it decide which devices it holds."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(String(1024))
    # devices of sensors assigned to no subscription belong to the default one
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))


class SubscriptionSensor(Base):
    """A sensor whose data belongs to one subscription (a sensor is in at most one)."""

    __tablename__ = "subscription_sensors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True)
    sensor: Mapped[str] = mapped_column(String(255), unique=True)


class SubscriptionRole(Base):
    """A user's role on one subscription; without one, the user's console role applies."""

    __tablename__ = "subscription_roles"
    __table_args__ = (UniqueConstraint("user_id", "subscription_id", name="uq_subscription_roles"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("console_users.id", ondelete="CASCADE"),
                                         index=True)
    subscription_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    assigned_at: Mapped[datetime]
    assigned_by: Mapped[str] = mapped_column(String(64))


class Plan(Base):
    """One plan of a subscription, from `start` until `end` (None: until cancelled)."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(Integer, ForeignKey("subscriptions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # trial, monthly, annual
    start: Mapped[datetime]
    end: Mapped[datetime | None]  # a trial's end is set when it is added
    # why it ended: cancelled, trial_expired (None while it runs, or for a trial not yet due)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))


class BillingPeriod(Base):
    """One period of a plan's terms, for pro-rata billing; `end` None means still open."""

    __tablename__ = "billing_ledger"
    __table_args__ = (Index("ix_billing_ledger_sub_start", "subscription_id", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(Integer, ForeignKey("plans.id"), index=True)
    subscription_id: Mapped[int] = mapped_column(Integer, ForeignKey("subscriptions.id"))
    kind: Mapped[str] = mapped_column(String(16))
    coverage: Mapped[str] = mapped_column(String(8))  # both, eiot, ot
    committed_devices: Mapped[int | None] = mapped_column(Integer)  # None: trial, no limit
    start: Mapped[datetime]
    end: Mapped[datetime | None]
    change: Mapped[str] = mapped_column(String(32))  # add, edit, cancel_eiot, cancel_ot
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))
    # highest daily billable count seen in the period, filled in once the period has closed
    billable_peak: Mapped[int | None] = mapped_column(Integer)


class BillableSnapshot(Base):
    """The billable count of one subscription on one day (the trend the console draws)."""

    __tablename__ = "billable_snapshots"
    __table_args__ = (UniqueConstraint("subscription_id", "day", name="uq_billable_snapshots_day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True)
    day: Mapped[date] = mapped_column(Date)
    eiot: Mapped[int] = mapped_column(Integer)  # IT/IoT devices active in the last 30 days
    ot: Mapped[int] = mapped_column(Integer)  # OT devices active in the last 60 days
    billable: Mapped[int] = mapped_column(Integer)  # of those, the ones the plan covers
    committed: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[datetime]


class EndpointAgent(Base):
    """A host an endpoint agent (EDR) manages, from an imported export; excluded from billing."""

    __tablename__ = "endpoint_agents"
    __table_args__ = (UniqueConstraint("agent_id", "mac", "ip", name="uq_endpoint_agents_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(255))
    mac: Mapped[str] = mapped_column(String(17), index=True)  # '' when the export has none
    ip: Mapped[str] = mapped_column(String(45), index=True)  # '' when the export has none
    hostname: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(1024))  # the file it came from
    imported_at: Mapped[datetime]
