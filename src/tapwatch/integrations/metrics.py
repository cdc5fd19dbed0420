"""Prometheus metrics for the console (/metrics) and the sensor (`start_metrics_server`).

Console metrics that describe the database (devices, alerts, forwarding backlog, ingested
packets) are read at scrape time, so several console processes over one database agree.
Request latency is per process, measured by `LatencyMiddleware`. A sensor serves capture
counters it updates after each flush, next to the same database gauges of its own store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tapwatch.store.alert_models import SEVERITIES, STATUSES, Alert
from tapwatch.store.integration_models import ForwardingRule
from tapwatch.store.models import Device, IngestedFile

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# per console process
REQUESTS = CollectorRegistry()
REQUEST_LATENCY = Histogram(
    "tapwatch_console_request_duration_seconds", "Console HTTP request latency",
    ["method", "route", "status"], registry=REQUESTS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class LatencyMiddleware:
    """Times every HTTP request; labelled by route template (not the raw path), so ids in
    URLs do not create a time series each."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            REQUEST_LATENCY.labels(scope.get("method", ""), _template(scope), str(status[0])).observe(
                time.perf_counter() - started)


def _template(scope: Scope) -> str:
    """The full path template of the matched route (included routers know only their part)."""
    route = scope.get("route")
    if route is None:
        return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"
    app = scope.get("app")
    state = getattr(app, "state", None)
    if state is None:
        return str(getattr(route, "path", "unmatched"))
    table = getattr(state, "metrics_route_paths", None)
    if table is None:
        from tapwatch.console.app import iter_routes

        table = {id(r): path for path, r in iter_routes(app.routes)}  # type: ignore[union-attr]
        state.metrics_route_paths = table
    return str(table.get(id(route)) or getattr(route, "path", "unmatched"))


def database_metrics(session: Session) -> list[Metric]:
    """Gauges of what the database holds now."""
    devices = GaugeMetricFamily("tapwatch_devices", "Devices in the inventory", labels=["class"])
    by_class = dict(session.execute(select(Device.device_class, func.count(Device.id))
                                    .group_by(Device.device_class)).all())
    for cls in ("IT", "IoT", "OT", None):
        devices.add_metric([cls or "unknown"], float(by_class.get(cls, 0)))
    alerts = GaugeMetricFamily("tapwatch_alerts", "Alerts by severity and status",
                               labels=["severity", "status"])
    counts = {(sev, st): n for sev, st, n in session.execute(
        select(Alert.severity, Alert.status, func.count(Alert.id)).group_by(Alert.severity, Alert.status))}
    for sev in SEVERITIES:
        for st in STATUSES:
            alerts.add_metric([sev, st], float(counts.get((sev, st), 0)))
    files = session.execute(select(func.count(IngestedFile.id), func.coalesce(
        func.sum(IngestedFile.packets), 0))).one()
    ingested = GaugeMetricFamily("tapwatch_ingested_packets", "Packets of every analyzed capture")
    ingested.add_metric([], float(files[1]))
    nfiles = GaugeMetricFamily("tapwatch_ingested_files", "Analyzed capture files")
    nfiles.add_metric([], float(files[0]))
    backlog = GaugeMetricFamily("tapwatch_forwarding_backlog",
                                "Alerts after a forwarding rule's cursor (not yet forwarded)",
                                labels=["rule"])
    delivered = GaugeMetricFamily("tapwatch_forwarding_delivered", "Alerts a rule delivered",
                                  labels=["rule"])
    failing = GaugeMetricFamily("tapwatch_forwarding_failing", "1 when the rule's last attempt failed",
                                labels=["rule"])
    for rule in session.scalars(select(ForwardingRule).order_by(ForwardingRule.id)):
        n = session.scalar(select(func.count(Alert.id)).where(Alert.id > rule.cursor)) or 0
        backlog.add_metric([rule.name], float(n))
        delivered.add_metric([rule.name], float(rule.delivered))
        failing.add_metric([rule.name], 1.0 if rule.last_error else 0.0)
    return [devices, alerts, ingested, nfiles, backlog, delivered, failing]


class _DatabaseCollector(Collector):
    """Database gauges read at each scrape, in a session of their own."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as s:
            yield from database_metrics(s)


def render_database(session: Session) -> bytes:
    """The database gauges in the Prometheus text format (`tapwatch metrics`)."""
    registry = CollectorRegistry(auto_describe=False)
    for metric in database_metrics(session):
        registry.register(_Fixed(metric))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self.metric


def render_console(sessions: sessionmaker[Session]) -> bytes:
    """What /metrics answers: database gauges and this process's request latency."""
    with sessions() as s:
        body = render_database(s)
    return body + generate_latest(REQUESTS)


# -- sensor side ----------------------------------------------------------------------------


@dataclass
class SensorMetrics:
    """What a sensor updates after each flush; served by `start_metrics_server`."""

    registry: CollectorRegistry
    packets: Counter
    drops: Counter  # packets the interface or kernel dropped
    packets_per_second: Gauge
    outbox_backlog: Gauge  # batches waiting to be pushed to the console
    server: Any = None
    _counted: tuple[int, int] = (0, 0)  # packets and drops already added to the counters

    def observe(self, health: dict[str, Any]) -> None:
        """Take a flush's health report (cumulative capture counters, rates, outbox)."""
        packets, drops = int(health.get("packets", 0)), int(health.get("drops", 0))
        self.packets.inc(max(packets - self._counted[0], 0))
        self.drops.inc(max(drops - self._counted[1], 0))
        self._counted = (max(packets, self._counted[0]), max(drops, self._counted[1]))
        self.packets_per_second.set(float(health.get("packets_per_s", 0.0)))
        self.outbox_backlog.set(float(health.get("outbox_batches", 0)))

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def sensor_metrics(sessions: sessionmaker[Session] | None = None) -> SensorMetrics:
    """A fresh set of sensor metrics in a registry of their own; with `sessions`, the
    database gauges (devices, alerts, forwarding) of the sensor's store join them."""
    reg = CollectorRegistry(auto_describe=False)
    if sessions is not None:
        reg.register(_DatabaseCollector(sessions))
    return SensorMetrics(
        registry=reg,
        packets=Counter("tapwatch_sensor_packets", "Packets captured", registry=reg),
        drops=Counter("tapwatch_sensor_drops", "Packets dropped before capture", registry=reg),
        packets_per_second=Gauge("tapwatch_sensor_packets_per_second", "Capture rate", registry=reg),
        outbox_backlog=Gauge("tapwatch_sensor_outbox_backlog", "Outbox batches not yet sent",
                             registry=reg),
    )


def start_metrics_server(port: int, addr: str = "127.0.0.1",
                         sessions: sessionmaker[Session] | None = None) -> SensorMetrics:
    """Serve the sensor's metrics on http://addr:port/metrics (loopback unless told otherwise:
    the endpoint has no authentication). Port 0 picks a free port (see `.server.server_port`)."""
    metrics = sensor_metrics(sessions)
    metrics.server = serve(metrics.registry, port, addr)
    return metrics


def database_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """The database gauges alone, read at each scrape (`tapwatch metrics --port`)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_DatabaseCollector(sessions))
    return reg


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """An HTTP server thread answering /metrics from `registry`; `.shutdown()` stops it."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
