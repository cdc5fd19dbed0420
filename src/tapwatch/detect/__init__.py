"""Detection: the learning baseline and the five alert engines (policy, anomaly, protocol
violation, malware, operational), run once per analysis on what it produced.

`detect(session, inputs)` settles the learning period for the run, lets every engine report
findings, stores them as alerts (with exclusions and the catalog applied), writes what was
learned, and closes alerts that went quiet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from tapwatch.detect import learning
from tapwatch.detect.alerts import AlertSink, DeviceIndex, expire
from tapwatch.detect.baseline import CONNECTION, FUNCTION, Baseline, connection_key, endpoint, function_key
from tapwatch.detect.context import Conn, Context, RunInputs, at
from tapwatch.detect.engines import ENGINES

__all__ = ["Conn", "DetectStats", "RunInputs", "detect"]


@dataclass
class DetectStats:
    raised: int = 0
    updated: int = 0
    excluded: int = 0
    learned: int = 0  # new baseline entries
    learning: bool = True  # still learning at the end of the run
    expired: int = 0


def _endpoints(inputs: RunInputs) -> set[tuple[str | None, str | None]]:
    found: set[tuple[str | None, str | None]] = set()
    for c in inputs.connections:
        found.update((c.client, c.server))
    for r in (*inputs.events, *inputs.signals):
        found.update((r.src, r.dst))
    return found


def _new_candidates(inputs: RunInputs, base: Baseline) -> list:  # type: ignore[type-arg]
    """First-seen times of what would be new in the baseline (for the quiet-period rule)."""
    out = [d.first_seen for d in inputs.new_devices]
    for c in inputs.connections:
        if (CONNECTION, connection_key(c.client_key, c.server_key, c.transport, c.port)) not in base:
            out.append(c.first)
    for s in inputs.signals:
        if s.kind == "function" and (FUNCTION, function_key(
                endpoint(*s.src), endpoint(*s.dst), s.details.get("protocol", ""),
                s.details.get("code", ""))) not in base:
            out.append(at(s))
    return out


def detect(session: Session, inputs: RunInputs, learn_for: timedelta | None = None,
           no_learn: bool = False) -> DetectStats:
    state = learning.begin(session, inputs.first, learn_for, no_learn)
    base = Baseline(session)
    end = learning.end_of_learning(state, _new_candidates(inputs, base))
    sink = AlertSink(session, inputs.sensor, inputs.file_id, DeviceIndex(session, _endpoints(inputs)))
    ctx = Context(session, inputs, base, sink, end)
    for engine in ENGINES:
        engine.run(ctx)
    stats = DetectStats(raised=sink.raised, updated=sink.updated, excluded=sink.excluded)
    stats.learned = base.flush()
    learning.settle(state, end, inputs.last)
    stats.learning = state.ended_at is None
    stats.expired = expire(session, inputs.last)
    return stats
