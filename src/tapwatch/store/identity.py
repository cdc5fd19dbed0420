"""Applying identification to stored devices: their facts in, name/vendor/type/… out."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.identify import FactView, identify
from tapwatch.store.evidence import facts_of_devices
from tapwatch.store.inventory import IN_CHUNK
from tapwatch.store.models import Device

GATEWAY_FACT = FactView("device_type", "router", "traffic", 0.4)


def refresh_identity(session: Session, device_ids: Iterable[int]) -> None:
    """Recompute the shown identity of these devices from all their facts."""
    ids = sorted(set(device_ids))
    by_device = facts_of_devices(session, ids)
    for i in range(0, len(ids), IN_CHUNK):
        for device in session.scalars(select(Device).where(Device.id.in_(ids[i : i + IN_CHUNK]))):
            views = [FactView(f.attribute, f.value, f.source, f.confidence, f.count)
                     for f in by_device.get(device.id, [])]
            if device.is_gateway:  # it routes for addresses behind it
                views.append(GATEWAY_FACT)
            ident = identify(device.mac, views, device.protocols)
            device.name = ident.name
            device.vendor = ident.vendor
            device.type = ident.type
            device.device_class = ident.device_class
            device.model = ident.model
            device.os = ident.os
            device.firmware = ident.firmware
