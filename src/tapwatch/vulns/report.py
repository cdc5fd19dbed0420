"""`tapwatch report risk`: one self-contained HTML page (no scripts, no external files).

Charts are inline SVG drawn here: the distribution of device scores, the most vulnerable
devices and the insecure protocols in use. Every value from the inventory or a feed is
HTML-escaped, since device names and advisory text come from the network and the internet.
"""

from __future__ import annotations

from html import escape
from typing import Any

BAND_COLORS = {"secure": "#2e7d32", "needs improvement": "#f9a825", "vulnerable": "#c62828"}
FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _label(d: dict[str, Any]) -> str:
    return " ".join(str(x) for x in (d.get("ip") or d.get("mac"), d.get("name") or d.get("model")) if x) \
        or f"device {d['device_id']}"


def score_histogram(devices: list[dict[str, Any]], weights: dict[str, Any]) -> str:
    """Devices per 10-point score bin, each bar in the colour of its band."""
    bins = [0] * 10
    for d in devices:
        bins[min(9, d["score"] // 10)] += 1
    top = max(bins) or 1
    width, height, left, bottom = 560, 220, 36, 30
    bar_w = (width - left - 10) / 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="Score distribution" style="{FONT};font-size:11px">']
    for tick in range(0, top + 1, max(1, top // 4)):
        y = height - bottom - (height - bottom - 20) * tick / top
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    for i, n in enumerate(bins):
        low = i * 10
        color = BAND_COLORS[_band_of(low + 9 if i < 9 else 100, weights)]
        h = (height - bottom - 20) * n / top
        x = left + i * bar_w
        y = height - bottom - h
        parts.append(f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" '
                     f'fill="{color}"><title>{low}–{low + 9 if i < 9 else 100}: {n} devices</title></rect>')
        if n:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" '
                     f'text-anchor="middle">{low}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 2}" text-anchor="middle">score</text></svg>')
    return "".join(parts)


def _band_of(score: int, weights: dict[str, Any]) -> str:
    if score >= weights["bands"]["secure"]:
        return "secure"
    return "needs improvement" if score >= weights["bands"]["needs_improvement"] else "vulnerable"


def hbar_chart(items: list[tuple[str, float, str, str]], label: str) -> str:
    """Horizontal bars: (label, value, value text, colour)."""
    if not items:
        return f'<p class="none">No {escape(label.lower())}.</p>'
    width, row, left = 640, 24, 260
    height = row * len(items) + 10
    top = max(v for _, v, _, _ in items) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(label)}" style="{FONT};font-size:12px">']
    for i, (name, value, text, color) in enumerate(items):
        y = 5 + i * row
        w = (width - left - 150) * value / top
        short = name if len(name) <= 40 else name[:39] + "…"
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(short)}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 8}" '
                     f'fill="{color}"><title>{escape(name)}: {escape(text)}</title></rect>'
                     f'<text x="{left + w + 6:.1f}" y="{y + 15}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def top_vulnerable(devices: list[dict[str, Any]], limit: int = 10) -> list[tuple[str, float, str, str]]:
    vulnerable = [d for d in devices if d["cves"]]
    vulnerable.sort(key=lambda d: (-d["kev_cves"], -d["cves"], -(d["max_cvss"] or 0), d["device_id"]))
    return [(_label(d), d["cves"],
             f"{d['cves']} CVE{'s' if d['cves'] != 1 else ''}"
             + (f", {d['kev_cves']} KEV" if d["kev_cves"] else "")
             + f", max {d['max_cvss']:.1f}", BAND_COLORS[d["band"]]) for d in vulnerable[:limit]]


def insecure_protocols(recommendations: list[dict[str, Any]]) -> list[tuple[str, float, str, str]]:
    """Devices per insecure practice, counted from the recommendations' unhealthy reasons."""
    kinds = (("serves Telnet (", "Telnet"), ("serves FTP (", "FTP"), ("serves TFTP (", "TFTP"),
             ("serves HTTP administration (", "HTTP administration"),
             ("SNMP v1/v2c with default", "SNMP default community"),
             ("MQTT password in clear", "MQTT clear-text password"),
             ("without credentials", "MQTT without credentials"), ("SMBv1", "SMBv1"),
             ("OPC UA security mode None", "OPC UA security None"))
    counts: dict[str, set[int]] = {label: set() for _, label in kinds}
    for rec in recommendations:
        for d in rec["unhealthy"]:
            for reason in d["reasons"]:
                for needle, label in kinds:
                    if needle in reason:
                        counts[label].add(d["device_id"])
    rows = [(label, float(len(ids)), f"{len(ids)} device{'s' if len(ids) != 1 else ''}", "#6a1b9a")
            for label, ids in counts.items() if ids]
    rows.sort(key=lambda r: -r[1])
    return rows


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="none">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(band: str) -> str:
    return f'<span class="badge" style="background:{BAND_COLORS[band]}">{escape(band)}</span>'


def render(devices: list[dict[str, Any]], sites: list[dict[str, Any]],
           recommendations: list[dict[str, Any]], vulns: list[dict[str, Any]],
           weights: dict[str, Any], generated: str) -> str:
    """The whole page."""
    n = len(devices)
    bands = {b: sum(1 for d in devices if d["band"] == b) for b in BAND_COLORS}
    overall = sites[0] if len(sites) == 1 else None
    summary = "".join(f'<div class="card"><div class="big" style="color:{BAND_COLORS[b]}">{c}</div>'
                      f"{escape(b)}</div>" for b, c in bands.items())
    kev = sum(1 for v in vulns if v["kev"])
    summary += (f'<div class="card"><div class="big">{len(vulns)}</div>device CVE matches'
                f"{f' ({kev} known exploited)' if kev else ''}</div>")
    site_rows = [[_e(s["site"]), f"<b>{s['score']}</b>", _badge(s["band"]), str(s["devices"]),
                  " / ".join(str(s["bands"][b]) for b in BAND_COLORS), str(s["cves"]),
                  _e(", ".join(f"{w['ip'] or w['device_id']} ({w['score']})" for w in s["worst"][:3]))]
                 for s in sites]
    rec_rows = [[_e(r["title"]), _e(r["severity"]), str(r["unhealthy_count"]), str(r["healthy_count"]),
                 _e("; ".join(f"{d['ip'] or d['device_id']}: {', '.join(d['reasons'])}"
                              for d in r["unhealthy"][:4])
                    + (" …" if r["unhealthy_count"] > 4 else "")),
                 _e(r["action"])]
                for r in recommendations if r["unhealthy_count"]]
    dev_rows = [[str(d["device_id"]), _e(d["ip"]), _e(d["name"]), _e(d["vendor"]), _e(d["model"]),
                 _e(d["type"]), f"<b>{d['score']}</b>", _badge(d["band"]), str(d["cves"]),
                 _e("; ".join(d["reasons"]))] for d in devices[:100]]
    vuln_rows = [[_e(v["device_ip"] or v["device_id"]), _e(v["cve"]),
                  _e("" if v["cvss_score"] is None else f"{v['cvss_score']:.1f}"),
                  "<b>KEV</b>" if v["kev"] else "", _e(v["confidence"]), _e(v["product"]),
                  _e(v["affected_versions"]), _e(v["remediation"])]
                 for v in sorted(vulns, key=lambda v: (not v["kev"], -(v["cvss_score"] or 0)))[:100]]
    title = "tapwatch risk report"
    top_chart = hbar_chart(top_vulnerable(devices), "Vulnerable devices")
    protocol_chart = hbar_chart(insecure_protocols(recommendations), "Insecure protocols")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{{FONT};margin:2em auto;max-width:1200px;color:#222;padding:0 1em}}
h1{{margin-bottom:0}} .sub{{color:#666;margin-top:.2em}}
.cards{{display:flex;gap:1em;flex-wrap:wrap}}
.card{{border:1px solid #ddd;border-radius:6px;padding:.8em 1.2em;min-width:9em}}
.big{{font-size:2em;font-weight:600}} .charts{{display:flex;flex-wrap:wrap;gap:2em}}
table{{border-collapse:collapse;width:100%;font-size:13px;margin:.5em 0 1.5em}}
th,td{{border-bottom:1px solid #e5e5e5;padding:4px 6px;text-align:left;vertical-align:top}}
th{{background:#f5f5f5}}
.badge{{color:#fff;border-radius:3px;padding:1px 6px;font-size:12px;white-space:nowrap}}
.none{{color:#666;font-style:italic}}
</style></head><body>
<h1>{title}</h1>
<p class="sub">{n} devices · generated {escape(generated)}{
        f" · site score {overall['score']} ({escape(overall['band'])})" if overall else ""}</p>
<div class="cards">{summary}</div>
<div class="charts">
<section><h2>Score distribution</h2>{score_histogram(devices, weights)}</section>
<section><h2>Top vulnerable devices</h2>{top_chart}</section>
<section><h2>Insecure protocols</h2>{protocol_chart}</section>
</div>
<h2>Sites</h2>
{_table(["Site", "Score", "Band", "Devices", "Secure / needs impr. / vulnerable", "CVEs", "Worst devices"],
        site_rows, "No devices.")}
<h2>Recommendations</h2>
{_table(["Recommendation", "Severity", "Unhealthy", "Healthy", "Devices and reasons", "Action"],
        rec_rows, "No recommendation has unhealthy devices.")}
<h2>Devices (lowest score first)</h2>
{_table(["ID", "IP", "Name", "Vendor", "Model", "Type", "Score", "Band", "CVEs", "Why"],
        dev_rows, "No devices.")}
<h2>Vulnerabilities</h2>
{_table(["Device", "CVE", "CVSS", "KEV", "Confidence", "Product", "Affected versions", "Remediation"],
        vuln_rows, "No vulnerabilities matched (import feeds with `tapwatch vulns import`).")}
<p class="sub">Scores: 100 minus points lost for vulnerabilities (CVSS, KEV), exposure (internet,
insecure protocols, clear-text credentials), open alerts, scaled by importance. Bands: secure
&ge; {weights['bands']['secure']}, needs improvement &ge; {weights['bands']['needs_improvement']},
vulnerable below.</p>
</body></html>
"""
