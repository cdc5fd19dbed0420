"""The sensors page: every sensor's state and health, and registering a new one."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from tapwatch.console import rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, render, tx
from tapwatch.sensor import ingest
from tapwatch.store.sensor_models import Sensor

router = APIRouter()


@router.get("/sensors")
def sensors_page(request: Request, msg: str | None = Query(None, max_length=200),
                 _: Principal = Depends(require(rbac.INVENTORY_READ))) -> Response:
    with tx(request) as s:
        rows = [ingest.sensor_json(x) for x in s.scalars(select(Sensor).order_by(Sensor.name))]
    return render(request, "sensors.html", nav="sensors", sensors=rows, msg=msg)


@router.post("/sensors")
def sensors_add(request: Request, name: str = Form(..., max_length=128),
                site: str = Form("", max_length=255), zone: str = Form("", max_length=255),
                who: Principal = Depends(require(rbac.SENSORS_WRITE))) -> Response:
    try:
        with tx(request) as s:
            sensor, token = ingest.add_sensor(s, name, site or None, zone or None, actor(who))
            out = ingest.sensor_json(sensor)
    except ingest.SensorError as e:
        raise HTTPException(400, str(e)) from e
    # the token is shown on this answer only (never in a URL or a log)
    return render(request, "sensor_token.html", nav="sensors", sensor=out, token=token)
