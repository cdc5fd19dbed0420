"""Sensors: registration, health, and the upload endpoint sensors push their batches to.

A sensor authenticates with its own token (`tws_…`, from `tapwatch sensors add`); that
principal may do one thing, upload. People with sensors:write manage sensors, and their
tokens cannot upload in a sensor's name. New data from a sensor needs a plan in force on
its subscription: without one, data batches are refused with 403 and the header
`X-Tapwatch-Refusal: no-active-plan` (the sensor keeps them until a plan is added), while
health reports are still taken so the console knows the sensor is alive.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tapwatch.console import rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, tx
from tapwatch.plans import features
from tapwatch.sensor import ingest, wire
from tapwatch.store.console_models import audit
from tapwatch.store.sensor_models import Sensor

router = APIRouter(tags=["sensors"])


@dataclass(frozen=True)
class SensorPrincipal(Principal):
    """A sensor calling with its token: it may upload, nothing else."""

    sensor_id: int = 0

    def can(self, permission: str) -> bool:
        return permission == rbac.SENSORS_WRITE


def sensor_principal(session: Session, token: str) -> Principal | None:
    """The principal of a sensor token (called by auth.authenticate in its transaction)."""
    sensor = ingest.sensor_for_token(session, token)
    if sensor is None:
        return None
    return SensorPrincipal(0, f"sensor:{sensor.name}", "sensor", "sensor", None, sensor.id)


def _people_only(who: Principal) -> None:
    if isinstance(who, SensorPrincipal):
        raise HTTPException(403, "sensor tokens may only upload")


class NewSensor(BaseModel):
    name: str = Field(..., min_length=1, max_length=128)
    site: str | None = Field(None, max_length=255)
    zone: str | None = Field(None, max_length=255)


@router.get("/sensors")
def list_sensors(request: Request, who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """Every sensor with its state (healthy, no traffic, disconnected, pending activation)."""
    with tx(request) as s:
        rows = [ingest.sensor_json(x) for x in s.scalars(select(Sensor).order_by(Sensor.name))]
    return {"total": len(rows), "sensors": rows}


@router.get("/sensors/{sensor_id}")
def get_sensor(request: Request, sensor_id: int,
               who: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    with tx(request) as s:
        sensor = s.get(Sensor, sensor_id)
        if sensor is None:
            raise HTTPException(404, f"no sensor with id {sensor_id}")
        return {**ingest.sensor_json(sensor), "health": sensor.health}


@router.post("/sensors", status_code=201)
def create_sensor(request: Request, body: NewSensor,
                  who: Principal = Depends(require(rbac.SENSORS_WRITE))) -> dict[str, Any]:
    """Register a sensor; the answer carries its activation token, shown only this once."""
    _people_only(who)
    try:
        with tx(request) as s:
            sensor, token = ingest.add_sensor(s, body.name, body.site, body.zone, actor(who))
            out = ingest.sensor_json(sensor)
    except ingest.SensorError as e:
        raise HTTPException(400, str(e)) from e
    return {**out, "token": token}


@router.post("/sensors/{sensor_id}/revoke")
def revoke_sensor(request: Request, sensor_id: int,
                  who: Principal = Depends(require(rbac.SENSORS_WRITE))) -> dict[str, Any]:
    """Refuse the sensor's token from now on (its data stays)."""
    _people_only(who)
    with tx(request) as s:
        sensor = s.get(Sensor, sensor_id)
        if sensor is None:
            raise HTTPException(404, f"no sensor with id {sensor_id}")
        sensor.revoked = True
        audit(s, actor(who), "sensor.revoke", "sensor", sensor.id, name=sensor.name)
        return ingest.sensor_json(sensor)


@router.post("/sensors/upload")
async def upload(request: Request, who: Principal = Depends(require(rbac.SENSORS_WRITE))) -> dict[str, Any]:
    """One gzip'd JSON batch from a sensor; applied once however often it is sent."""
    if not isinstance(who, SensorPrincipal):
        raise HTTPException(400, "uploads are made with a sensor's token (tapwatch sensors add)")
    body = await request.body()
    try:
        doc = wire.decode(body)
    except wire.WireError as e:
        raise HTTPException(400, str(e)) from e
    if doc["kind"] != "health":
        await run_in_threadpool(_require_plan, request, who)
    try:
        applied = await run_in_threadpool(ingest.apply_batch, request.app.state.sessions, who.sensor_id, doc)
    except (wire.WireError, KeyError, TypeError, ValueError) as e:
        raise HTTPException(400, f"malformed batch: {e}") from e
    return {"batch_id": doc["batch_id"], "applied": applied}


def _require_plan(request: Request, who: SensorPrincipal) -> None:
    """Refuse new data from a sensor whose subscription has no plan in force."""
    with tx(request) as s:
        sensor = s.get(Sensor, who.sensor_id)
        ent = features.for_sensor(s, sensor.name if sensor else None)
    if not ent.allows("sensor_data"):
        why = ent.refusal("sensor_data") + "; the sensor keeps its data until a plan is added"
        raise HTTPException(403, why, headers={wire.REFUSAL: wire.NO_PLAN})
