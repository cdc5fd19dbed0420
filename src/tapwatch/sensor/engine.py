"""The sensor's pipeline: live chunks through the same decode → aggregate → dissect stages as
capture files, flushed into the store every few seconds, delta by delta.

Each flush merges only what arrived since the previous one (the aggregation and the
dissection results start empty again afterwards), with the same store functions a capture
file goes through, so nothing is counted twice. The same transaction writes that delta to
the outbox for the console: a crash keeps both or neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event, select

from tapwatch.analyze import Silence, conn_of, identify_and_detect, store_results
from tapwatch.capture.reader import Chunk
from tapwatch.decode import Decoder
from tapwatch.decode.aggregate import Aggregator, fill_missing_macs
from tapwatch.detect import DetectStats, RunInputs
from tapwatch.dissect.stage import DissectResults, DissectStage
from tapwatch.sensor import wire
from tapwatch.sensor.outbox import Outbox, get_state, set_state
from tapwatch.sensor.rolling import RollingPcap
from tapwatch.store import inventory
from tapwatch.store.alert_models import Alert
from tapwatch.store.db import sessions

ALERTS_MARK = "alerts_exported_until"


def durable(engine: Engine) -> None:
    """SQLite commits reach the disk (fsync) before a flush counts as done."""
    if engine.dialect.name != "sqlite":
        return

    def full_sync(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    event.listen(engine, "connect", full_sync)
    engine.dispose()  # pooled connections were opened before the listener


@dataclass
class FlushReport:
    packets: int = 0
    bytes: int = 0
    addresses: int = 0
    connections: int = 0
    facts: int = 0
    events: int = 0
    batches: int = 0
    seconds: float = 0.0
    stats: inventory.IngestStats = field(default_factory=inventory.IngestStats)
    detection: DetectStats | None = None
    forwarding: str | None = None


class SensorPipeline:
    """Feeds chunks through the batch engine; `flush()` stores the delta and queues it."""

    def __init__(self, engine: Engine, sensor: str, outbox: Outbox | None = None,
                 rolling: RollingPcap | None = None, dissect: bool = True, detect: bool = True) -> None:
        self.engine = engine
        self.sessions = sessions(engine)
        self.sensor = sensor
        self.outbox = outbox
        self.rolling = rolling
        self.detect = detect and dissect  # the engines read the dissectors' signals
        self.stage = DissectStage(signals=self.detect) if dissect else None
        self.decoder = Decoder(picker=self.stage.picker if self.stage else None)
        self.agg = Aggregator()
        self.packets = 0  # since the last flush
        self.bytes = 0
        self.first_ns: int | None = None  # capture time of the delta
        self.last_ns: int | None = None
        self.gap = Silence()  # carries the previous delta's last packet
        self.watch_since_ns = time.time_ns()  # the end of the previous detection run

    def feed(self, chunk: Chunk) -> None:
        n = len(chunk)
        if n == 0:
            return
        for rows in self.decoder.batches(chunk):
            self.agg.update(rows)
            if self.stage:
                self.stage.batch(chunk, rows)
        if self.rolling is not None:
            self.rolling.write(chunk)
        self.packets += n
        self.bytes += int(chunk.wire.sum())
        ts = chunk.ts[:n]
        self.gap.update(ts)
        lo, hi = int(ts.min()), int(ts.max())
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)

    def _take_delta(self) -> tuple[list[Any], list[Any], DissectResults | None]:
        """What was aggregated since the last flush; the tables start empty again."""
        results = None
        if self.stage:
            # forget the payloads seen: a repeat after this flush belongs to the next delta
            self.stage.forget()
            results = self.stage.results
            self.stage.results = DissectResults()
        addresses, connections = fill_missing_macs(self.agg.addresses(), self.agg.connections())
        self.agg = Aggregator(self.agg.akeys.shape[0], self.agg.ckeys.shape[0])
        return addresses, connections, results

    def flush(self, health: dict[str, Any] | None = None) -> FlushReport:
        """Merge the delta into the local inventory and queue it (and health) for the console."""
        started = time.perf_counter()
        report = FlushReport(packets=self.packets, bytes=self.bytes)
        addresses, connections, results = self._take_delta()
        self.packets = self.bytes = 0
        first_ns, last_ns, gap = self.first_ns, self.last_ns, self.gap.longest()
        self.first_ns = self.last_ns = None
        last_packet = self.gap.prev
        self.gap = Silence()
        self.gap.prev = last_packet
        if first_ns is None and last_packet is not None:  # nothing arrived: the wire is quiet so far
            first_ns = last_ns = time.time_ns()
            gap = (inventory.ns_to_dt(last_packet), inventory.ns_to_dt(last_ns))
        report.addresses, report.connections = len(addresses), len(connections)
        with self.sessions.begin() as s:
            if addresses or connections:
                report.stats = inventory.merge_run(s, addresses, connections, self.sensor)
            ids = report.stats.device_ids
            if results is not None and (results.facts or results.errors or results.events):
                report.facts = len(results.facts)
                report.events, ids = store_results(s, results, report.stats, None)
            run = None
            if self.detect and results is not None and first_ns is not None and last_ns is not None:
                run = RunInputs(
                    sensor=self.sensor, file_id=None, first=inventory.ns_to_dt(first_ns),
                    last=inventory.ns_to_dt(last_ns), connections=[conn_of(c) for c in connections],
                    events=results.events, signals=results.signals, errors=results.errors,
                    new_devices=report.stats.new_devices, gap=gap,
                    watch_since=inventory.ns_to_dt(self.watch_since_ns))
                self.watch_since_ns = last_ns
            if ids or run:
                report.detection = identify_and_detect(s, ids, run)
            if self.outbox is not None:
                for kind, data, records in wire.delta_batches(addresses, connections, results):
                    self.outbox.put(s, kind, data, records)
                    report.batches += 1
                report.batches += self._queue_alerts(s)
                if health is not None:
                    batches, size = Outbox.backlog(s)
                    health.update(outbox_batches=batches, outbox_bytes=size,
                                  outbox_dropped=Outbox.dropped(s))  # the caller shows these too
                    self.outbox.put(s, "health", health, 1)
        if report.detection and (report.detection.raised or report.detection.updated):
            self._forward(report)
        report.seconds = time.perf_counter() - started
        return report

    def _forward(self, report: FlushReport) -> None:
        """New alerts to the SIEM rules, once the flush is committed (rules that fail retry
        on the next flush; the capture never waits for a SIEM)."""
        from tapwatch.integrations.forwarding import forward_new_alerts

        with self.sessions.begin() as s:
            sent = forward_new_alerts(s)
        if sent.rules:
            report.forwarding = sent.summary()

    def _queue_alerts(self, s: Any) -> int:
        """Alerts raised or updated since the last export."""
        assert self.outbox is not None
        mark = get_state(s, ALERTS_MARK)
        q = select(Alert).order_by(Alert.last_detected, Alert.id)
        if mark:
            q = q.where(Alert.last_detected > inventory.ns_to_dt(int(mark)))
        rows = [alert_json(a) for a in s.scalars(q)]
        if not rows:
            return 0
        n = 0
        for i in range(0, len(rows), wire.PER_BATCH["alerts"]):
            part = rows[i:i + wire.PER_BATCH["alerts"]]
            self.outbox.put(s, "alerts", {"alerts": part}, len(part))
            n += 1
        set_state(s, ALERTS_MARK, max(r["last_detected_ns"] for r in rows))
        return n


ALERT_FIELDS = ("key", "type", "title", "engine", "severity", "category", "mitre", "status", "protocol",
                "src_mac", "src_ip", "dst_mac", "dst_ip", "count", "details", "closed_reason")


def alert_json(a: Alert) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(a, f) for f in ALERT_FIELDS}
    out["first_detected_ns"] = inventory.dt_to_ns(a.first_detected)
    out["last_detected_ns"] = inventory.dt_to_ns(a.last_detected)
    out["closed_at_ns"] = inventory.dt_to_ns(a.closed_at) if a.closed_at else None
    return out

