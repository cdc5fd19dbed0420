"""The network map as server-drawn SVG: devices by Purdue level, or laid out by who talks to whom.

Drawn on the server so the page needs no JavaScript library; each device is a link to its
page. Big inventories are cut to the devices with the most traffic (the page says so).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tapwatch.store.models import Connection, Device

MAX_NODES = 400
WIDTH = 1200
PER_ROW = 10
ROW_H = 58
CLASS_COLORS = {"OT": "#d9480f", "IoT": "#1971c2", "IT": "#2f9e44", None: "#868e96"}
LEVELS = {5: "Level 5 · enterprise network", 4: "Level 4 · business / site IT",
          3: "Level 3 · operations (historian, SCADA)", 2: "Level 2 · supervisory (HMI, EWS)",
          1: "Level 1 · control (PLC, RTU, IED)", 0: "Level 0 · field devices",
          None: "Level unknown"}


@dataclass
class MapData:
    devices: list[Device]
    edges: dict[tuple[int, int], int]  # (device, device) -> packets
    total: int


def load(session: Session, limit: int = MAX_NODES) -> MapData:
    total = session.scalar(select(func.count(Device.id))) or 0
    devices = list(session.scalars(select(Device).order_by(
        (Device.packets_sent + Device.packets_received).desc(), Device.id).limit(limit)))
    ids = {d.id for d in devices}
    edges: dict[tuple[int, int], int] = defaultdict(int)
    q = (select(Connection.client_device_id, Connection.server_device_id,
                func.sum(Connection.packets_c2s + Connection.packets_s2c))
         .where(Connection.client_device_id.is_not(None), Connection.server_device_id.is_not(None))
         .group_by(Connection.client_device_id, Connection.server_device_id))
    for a, b, packets in session.execute(q):
        if a in ids and b in ids and a != b:
            edges[(min(a, b), max(a, b))] += int(packets or 0)
    return MapData(devices, dict(edges), total)


def _label(d: Device) -> str:
    return (d.name or d.ip or d.mac or f"device {d.id}")[:20]


def _node(d: Device, x: float, y: float) -> str:
    color = CLASS_COLORS.get(d.device_class, CLASS_COLORS[None])
    ring = ' stroke="#c92a2a" stroke-width="3"' if not d.authorized else ' stroke="#fff" stroke-width="1.5"'
    tip = f"{_label(d)} — {d.type or 'unknown type'}, {d.vendor or 'unknown vendor'}, {d.ip or d.mac}"
    return (f'<a href="/devices/{d.id}" class="node"><title>{escape(tip)}</title>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="{color}"{ring}/>'
            f'<text x="{x:.1f}" y="{y + 21:.1f}" text-anchor="middle" font-size="10" '
            f'fill="#343a40">{escape(_label(d))}</text></a>')


def _edges(pos: dict[int, tuple[float, float]], edges: dict[tuple[int, int], int]) -> list[str]:
    out = []
    for (a, b), _packets in edges.items():
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                       f'stroke="#adb5bd" stroke-width="1" stroke-opacity="0.6"/>')
    return out


def purdue_svg(data: MapData) -> Markup:
    """Rows from level 5 (top) to level 0, unknown last; edges drawn under the nodes."""
    by_level: dict[int | None, list[Device]] = defaultdict(list)
    for d in sorted(data.devices, key=lambda d: (d.type or "~", d.ip or "")):
        by_level[d.purdue_level].append(d)
    pos: dict[int, tuple[float, float]] = {}
    bands: list[str] = []
    y = 10.0
    for level in (5, 4, 3, 2, 1, 0, None):
        members = by_level.get(level, [])
        if not members:
            continue
        lines = (len(members) + PER_ROW - 1) // PER_ROW
        height = 30 + lines * ROW_H
        shade = "#f8f9fa" if len(bands) % 2 == 0 else "#f1f3f5"
        bands.append(f'<rect x="0" y="{y:.0f}" width="{WIDTH}" height="{height}" fill="{shade}"/>'
                     f'<text x="10" y="{y + 18:.0f}" font-size="12" font-weight="600" '
                     f'fill="#495057">{escape(LEVELS[level])} ({len(members)})</text>')
        step = (WIDTH - 60) / PER_ROW
        for i, d in enumerate(members):
            line, col = divmod(i, PER_ROW)
            pos[d.id] = (40 + col * step + step / 2, y + 42 + line * ROW_H)
        y += height + 6
    return _svg(y, bands + _edges(pos, data.edges) + [_node(d, *pos[d.id]) for d in data.devices])


def connection_svg(data: MapData) -> Markup:
    """A force-directed layout of devices that talk to each other; silent ones in a row below."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(d.id for d in data.devices)
    for (a, b), packets in data.edges.items():
        graph.add_edge(a, b, weight=1 + min(packets, 10_000) / 1000)
    linked = [n for n in graph.nodes if graph.degree(n) > 0]
    height = 760.0
    pos: dict[int, tuple[float, float]] = {}
    if linked:
        layout = nx.spring_layout(graph.subgraph(linked), seed=7, k=1.5 / max(1, len(linked)) ** 0.5)
        xs = [p[0] for p in layout.values()]
        ys = [p[1] for p in layout.values()]
        span_x, span_y = (max(xs) - min(xs)) or 1, (max(ys) - min(ys)) or 1
        for n, (px, py) in layout.items():
            pos[n] = (50 + (px - min(xs)) / span_x * (WIDTH - 100),
                      40 + (py - min(ys)) / span_y * (height - 100))
    alone = [d for d in data.devices if d.id not in pos]
    y = height
    step = (WIDTH - 60) / PER_ROW
    for i, d in enumerate(alone):
        line, col = divmod(i, PER_ROW)
        pos[d.id] = (40 + col * step + step / 2, y + line * ROW_H)
    if alone:
        y += ((len(alone) + PER_ROW - 1) // PER_ROW) * ROW_H
    return _svg(y, _edges(pos, data.edges) + [_node(d, *pos[d.id]) for d in data.devices])


def _svg(height: float, parts: list[str]) -> Markup:
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" '
                  f'width="100%" role="img" aria-label="network map" class="netmap">'
                  + "".join(parts) + "</svg>")
