"""The upload format between sensor and console: gzip'd JSON batches with ids.

A flush's delta is cut into batches in the order the console must apply them:
addresses (which make the devices), then connections (linked to those devices as they
are stored), then evidence (facts, protocol errors, events, which attach to addresses),
then alerts. Every batch of a flush but the last says `more: true`, so the console
recomputes identity once, when the whole flush is in. Health is a batch of its own that
the newest one supersedes. Records are positional lists, not objects, so a batch stays
small before compression.
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import fields
from operator import attrgetter
from typing import Any

from tapwatch import __version__
from tapwatch.decode.aggregate import AddressRecord, ConnectionRecord
from tapwatch.dissect.stage import DissectResults, EventRecord, FactStat

FORMAT = 1
# what a full outbox gives up first: the lowest priority, oldest first
PRIORITY = {"health": 0, "connections": 1, "addresses": 2, "evidence": 3, "alerts": 4}
PER_BATCH = {"connections": 8000, "addresses": 4000, "evidence": 4000, "alerts": 2000}
# a record's fields in order, as a tuple (astuple would deep-copy every record)
ADDRESS_FIELDS = attrgetter(*(f.name for f in fields(AddressRecord)))
CONNECTION_FIELDS = attrgetter(*(f.name for f in fields(ConnectionRecord)))
MORE = "more"  # set on every batch of a flush but its last
MAX_JSON = 64 << 20  # a decompressed batch larger than this is refused (zip bombs)
# the console's 403 to data it will not take because the sensor's subscription has no plan
# in force carries REFUSAL: NO_PLAN; the sensor then keeps the batch instead of setting it aside
REFUSAL = "X-Tapwatch-Refusal"
NO_PLAN = "no-active-plan"


class WireError(ValueError):
    """A batch the console cannot read."""


def encode(kind: str, data: dict[str, Any], batch_id: str | None = None) -> tuple[str, bytes]:
    """(batch id, gzip'd JSON body) of one batch."""
    batch_id = batch_id or uuid.uuid4().hex
    doc = {"format": FORMAT, "batch_id": batch_id, "kind": kind, "version": __version__, "data": data}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return batch_id, gzip.compress(raw, compresslevel=6)


def decode(body: bytes) -> dict[str, Any]:
    """The batch document of a gzip'd (or plain) JSON body, bounded in size."""
    if body[:2] == b"\x1f\x8b":
        z = zlib.decompressobj(wbits=31)
        try:
            raw = z.decompress(body, MAX_JSON)
        except zlib.error as e:
            raise WireError(f"corrupt gzip body ({e})") from e
        if z.unconsumed_tail:
            raise WireError(f"batch larger than {MAX_JSON} bytes once decompressed")
    else:
        raw = body
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise WireError(f"batch is not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("data"), dict):
        raise WireError("not a tapwatch sensor batch (format 1)")
    batch_id = doc.get("batch_id")
    if not isinstance(batch_id, str) or not 8 <= len(batch_id) <= 64:
        raise WireError("batch_id must be a string of 8-64 characters")
    if doc.get("kind") not in PRIORITY:
        raise WireError(f"unknown batch kind {doc.get('kind')!r}")
    return doc


def _slices(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def delta_batches(addresses: list[AddressRecord], connections: list[ConnectionRecord],
                  results: DissectResults | None) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(kind, data, records) of one flush, in the order the console applies them."""
    batches = list(_delta_batches(addresses, connections, results))
    for i, (kind, data, records) in enumerate(batches):
        if i < len(batches) - 1:
            data[MORE] = True
        yield kind, data, records


def _delta_batches(addresses: list[AddressRecord], connections: list[ConnectionRecord],
                   results: DissectResults | None) -> Iterator[tuple[str, dict[str, Any], int]]:
    for part in _slices([list(ADDRESS_FIELDS(a)) for a in addresses], PER_BATCH["addresses"]):
        yield "addresses", {"addresses": part}, len(part)
    for part in _slices([list(CONNECTION_FIELDS(c)) for c in connections], PER_BATCH["connections"]):
        yield "connections", {"connections": part}, len(part)
    if results is None:
        return
    facts = [[*k, st.first_ns, st.last_ns, st.count, st.confidence] for k, st in results.facts.items()]
    errors = [[*k, int(v[0]), str(v[1])] for k, v in results.errors.items()]
    events = [[e.ts_ns, e.packet, *e.src, *e.dst, e.protocol, e.kind, _jsonable(e.details), e.count,
               e.last_ns] for e in results.events]
    size = PER_BATCH["evidence"]
    n = max(len(facts), len(errors), len(events))
    for i in range(0, n, size):
        ev = {"facts": facts[i:i + size], "errors": errors[i:i + size], "events": events[i:i + size]}
        yield "evidence", dict(ev), sum(len(v) for v in ev.values())


def more_follow(data: dict[str, Any]) -> bool:
    """Whether further batches of the same flush follow this one (older sensors never say so)."""
    return data.get(MORE) is True


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.hex() if isinstance(v, bytes) else v if isinstance(v, (int, float, str, bool))
                or v is None else str(v)) for k, v in details.items()}


# -- reading a batch back (console side) ---------------------------------------------------


def addresses_of(data: dict[str, Any]) -> list[AddressRecord]:
    out = []
    for r in data.get("addresses", []):
        if len(r) != 12:
            raise WireError("address records have 12 fields")
        v = [int(x) for x in r[:10]]
        out.append(AddressRecord(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
                                 [int(x) for x in r[10]], [int(x) for x in r[11]]))
    return out


def connections_of(data: dict[str, Any]) -> list[ConnectionRecord]:
    out = []
    for r in data.get("connections", []):
        if len(r) != 15:
            raise WireError("connection records have 15 fields")
        out.append(ConnectionRecord(*map(int, r)))
    return out


def evidence_of(data: dict[str, Any]) -> DissectResults:
    res = DissectResults()
    for mac, ip, attr, value, source, first, last, count, conf in data.get("facts", []):
        res.facts[(str(mac), str(ip), str(attr), str(value), str(source))] = FactStat(
            int(first), int(last), int(count), float(conf))
    for mac, ip, proto, count, reason in data.get("errors", []):
        res.errors[(str(mac), str(ip), str(proto))] = [int(count), str(reason)]
    for ts, packet, smac, sip, dmac, dip, proto, kind, details, count, last in data.get("events", []):
        res.events.append(EventRecord(int(ts), int(packet), (str(smac), str(sip)), (str(dmac), str(dip)),
                                      str(proto), str(kind), dict(details), int(count), int(last)))
    return res
