"""Throughput and memory benchmark for ``tapwatch analyze``.

Why this exists: the sensor's hot path (../shared/DESIGN.md, "The hot path") has hard
targets: at least 2 M packets/s end to end into SQLite on one core, peak RSS below
400 MB, and memory that stays flat as the capture grows, because memory must be bounded
by devices and connections, never by packets.  Those numbers are only meaningful next to what
other tools manage on the same machine and the same traffic, so one run of this script
measures, on a deterministic replay of the real captures in ../shared/captures:

1. ``tapwatch analyze`` on the full capture (~1.2 GB, ~8.7 M packets), pinned to one
   core, best wall time of ``--repeat`` runs and the largest peak RSS;
2. peers on a slice of the same capture (first 1,000,000 packets by default), each
   pinned to the same core and scaled to packets/s: tshark field extraction, a plain
   dpkt decode-and-aggregate loop, and nfstream;
3. ``tapwatch analyze`` once more on a 4x capture, to check that peak RSS is flat.

Generated captures are cached in benchmarks/.data/ (git-ignored) and rebuilt only when
missing.  The report goes to stdout, progress to stderr, and ``--json FILE`` writes the
same figures as JSON.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "benchmarks" / ".data"
MAKE_PCAP = REPO / ".." / "shared" / "bench" / "make_bench_pcap.sh"

DEFAULT_TARGET_BYTES = 1_200_000_000
QUICK_TARGET_BYTES = 100_000_000
DEFAULT_PEER_PACKETS = 1_000_000
SCALE_FACTOR = 4

TARGET_PPS = 2_000_000
TARGET_RSS_MB = 400
TARGET_DISSECT_RATIO = 0.8  # all dissectors on costs at most 20% of the throughput
TARGET_DETECT_RATIO = 0.8  # and detection on top of them at most another 20%
TARGET_FLAT_RATIO = 1.15

PEERS = ("tshark", "dpkt", "nfstream")
PEER_LABELS = {"tshark": "tshark -T fields", "dpkt": "dpkt loop", "nfstream": "nfstream"}
TSHARK_FIELDS = (
    "frame.time_epoch",
    "frame.len",
    "eth.src",
    "eth.dst",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
)
DEFAULT_TAPWATCH_TEMPLATE = "analyze {capture} --db {db}"


class BenchError(Exception):
    """A step of the benchmark could not run; the message says which and why."""


# --------------------------------------------------------------------------- results


@dataclass
class Measurement:
    """One pinned subprocess run: wall time and peak RSS as reported by wait4."""

    command: list[str]
    seconds: float
    peak_rss_kib: int
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class ToolResult:
    """Best time and largest peak RSS of one tool on one input."""

    name: str
    label: str
    input: str
    packets: int
    on_slice: bool
    runs_seconds: list[float]
    peak_rss_kib: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return min(self.runs_seconds)

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kib * 1024 / 1e6

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "input": self.input,
            "packets": self.packets,
            "on_slice": self.on_slice,
            "seconds": self.seconds,
            "runs_seconds": self.runs_seconds,
            "packets_per_second": self.pps,
            "peak_rss_kib": self.peak_rss_kib,
            "peak_rss_mb": self.peak_rss_mb,
            "details": self.details,
        }


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def display_path(path: Path) -> str:
    """Path relative to the repository root when it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def require_tools(names: list[str]) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (apt-get install tshark util-linux)")


def run_quiet(cmd: list[str]) -> str:
    """Run a helper command (not measured); return stdout or raise BenchError."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, discard_stdout: bool = False
) -> Measurement:
    """Run cmd to completion; wall time from perf_counter, peak RSS from os.wait4.

    stdout/stderr go to temporary files rather than pipes so that a chatty child can
    never block on a full pipe while we sit in wait4.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdout = subprocess.DEVNULL if discard_stdout else out
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it was reaped
        out.seek(0)
        err.seek(0)
        return Measurement(
            command=cmd,
            seconds=seconds,
            peak_rss_kib=usage.ru_maxrss,  # KiB on Linux
            exit_code=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def describe_failure(what: str, m: Measurement, tail_lines: int = 25) -> str:
    if m.exit_code < 0:
        how = f"killed by signal {-m.exit_code}"
    else:
        how = f"exit {m.exit_code}"
    tail = "\n".join((m.stderr.strip() or m.stdout.strip()).splitlines()[-tail_lines:])
    return f"{what} failed ({how}) after {m.seconds:.2f} s:\n  $ {shlex.join(m.command)}\n{tail}"


def pinned(cmd: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd]


def warm_page_cache(path: Path) -> None:
    """Read the file once so every measured run starts from the page cache."""
    buf = bytearray(8 << 20)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass


# --------------------------------------------------------------------------- captures


def capture_path(target_bytes: int) -> Path:
    return DATA_DIR / f"bench-{target_bytes}.pcap"


def ensure_capture(target_bytes: int) -> Path:
    """Return the cached replay capture of about target_bytes, building it if missing."""
    path = capture_path(target_bytes)
    if path.exists():
        return path
    script = MAKE_PCAP.resolve()
    if not script.is_file():
        raise BenchError(f"capture generator not found: {script}")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".pcap.partial")
    log(f"building {display_path(path)} ({target_bytes:,} bytes) with {script.name} ...")
    start = time.perf_counter()
    run_quiet(["bash", str(script), str(partial), str(target_bytes)])
    partial.rename(path)  # only complete captures ever carry the cached name
    log(f"  built in {time.perf_counter() - start:.1f} s")
    return path


def packet_count(path: Path) -> int:
    """Packet count from `capinfos -c -M -T` (tab-separated: name, count)."""
    out = run_quiet(["capinfos", "-c", "-M", "-T", str(path)])
    lines = out.strip().splitlines()
    try:
        return int(lines[-1].split("\t")[1])
    except (IndexError, ValueError) as exc:
        raise BenchError(f"cannot read packet count of {path} from capinfos:\n{out}") from exc


def ensure_slice(capture: Path, packets: int) -> Path:
    """Return the cached capture of the first `packets` packets of capture, as classic
    pcap like the capture itself (editcap would write pcapng by default)."""
    path = capture.with_name(f"{capture.stem}.first-{packets}.pcap")
    if path.exists():
        return path
    partial = path.with_suffix(".pcap.partial")
    log(f"cutting {display_path(path)} (first {packets:,} packets) ...")
    run_quiet(["editcap", "-F", "pcap", "-r", str(capture), str(partial), f"1-{packets}"])
    partial.rename(path)
    return path


# --------------------------------------------------------------------------- tapwatch


def default_tapwatch() -> list[str]:
    """The tapwatch executable next to this interpreter, else `python -m tapwatch.cli`."""
    exe = Path(sys.executable).parent / "tapwatch"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "tapwatch.cli"]


def tapwatch_command(template: str | None, capture: Path, db: Path) -> list[str]:
    """Expand --tapwatch-cmd: {capture} and {db} are substituted; without a {capture}
    placeholder the capture path is appended."""
    if template is None:
        args = default_tapwatch() + shlex.split(DEFAULT_TAPWATCH_TEMPLATE)
    else:
        args = shlex.split(template)
    if not any("{capture}" in arg for arg in args):
        args.append("{capture}")
    return [arg.replace("{capture}", str(capture)).replace("{db}", str(db)) for arg in args]


def run_tapwatch_once(
    capture: Path, template: str | None, cpu: int, tmpdir: str | None
) -> tuple[Measurement, int]:
    """One measured run into a fresh SQLite file; returns the run and the db size."""
    with tempfile.TemporaryDirectory(prefix="tapwatch-bench-", dir=tmpdir) as scratch:
        db = Path(scratch) / "tapwatch.db"
        m = run_measured(pinned(tapwatch_command(template, capture, db), cpu))
        db_bytes = sum(p.stat().st_size for p in Path(scratch).glob("tapwatch.db*"))
    if not m.ok:
        raise BenchError(describe_failure("tapwatch run", m))
    return m, db_bytes


def bench_tapwatch(
    capture: Path,
    packets: int,
    repeat: int,
    template: str | None,
    cpu: int,
    tmpdir: str | None,
    label: str | None = None,
) -> ToolResult:
    return bench_variants(capture, packets, repeat, [(label, template)], cpu, tmpdir)[0]


def bench_variants(
    capture: Path,
    packets: int,
    repeat: int,
    variants: list[tuple[str | None, str | None]],
    cpu: int,
    tmpdir: str | None,
) -> list[ToolResult]:
    """Runs each (label, command template) `repeat` times, interleaved round by round, so
    that a load change on a shared machine hits every variant alike and their ratio holds."""
    warm_page_cache(capture)
    runs: list[list[Measurement]] = [[] for _ in variants]
    db_bytes = [0] * len(variants)
    for i in range(repeat):
        for v, (label, template) in enumerate(variants):
            m, db_bytes[v] = run_tapwatch_once(capture, template, cpu, tmpdir)
            name = (label or "tapwatch").strip()
            log(
                f"  {name} run {i + 1}/{repeat}: {m.seconds:.2f} s, "
                f"peak RSS {m.peak_rss_kib * 1024 / 1e6:.0f} MB"
            )
            runs[v].append(m)
    return [
        ToolResult(
            name="tapwatch",
            label=label or ("tapwatch analyze" if template is None else "--tapwatch-cmd"),
            input=display_path(capture),
            packets=packets,
            on_slice=False,
            runs_seconds=[m.seconds for m in runs[v]],
            peak_rss_kib=max(m.peak_rss_kib for m in runs[v]),
            details={"command": shlex.join(runs[v][0].command), "db_bytes": db_bytes[v]},
        )
        for v, (label, template) in enumerate(variants)
    ]


# --------------------------------------------------------------------------- peers
# dpkt_loop and nfstream_loop run in a child interpreter (see peer_command) so that
# their time and peak RSS are measured exactly like tapwatch's.


def dpkt_loop(path: str) -> dict[str, int]:
    """Peer doing tapwatch's core work with dpkt: decode Ethernet (with VLAN tags),
    IPv4/IPv6 and TCP/UDP, and aggregate devices ((src MAC, src IP) -> packets, bytes)
    and direction-independent 5-tuple connections in dicts."""
    import dpkt

    ip_types = (dpkt.ip.IP, dpkt.ip6.IP6)
    port_types = (dpkt.tcp.TCP, dpkt.udp.UDP)
    devices: dict[tuple[bytes, bytes | None], list[int]] = {}
    connections: dict[tuple[int, bytes, int, bytes, int], list[int]] = {}
    packets = undecoded = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            packets += 1
            size = len(buf)
            try:
                eth = dpkt.ethernet.Ethernet(buf)  # strips 802.1Q/QinQ tags itself
            except dpkt.UnpackError:
                undecoded += 1
                continue
            ip = eth.data
            src_ip = ip.src if isinstance(ip, ip_types) else None
            dev = devices.get((eth.src, src_ip))
            if dev is None:
                devices[(eth.src, src_ip)] = [1, size]
            else:
                dev[0] += 1
                dev[1] += size
            if src_ip is None:
                continue
            l4 = ip.data
            sport, dport = (l4.sport, l4.dport) if isinstance(l4, port_types) else (0, 0)
            a, b = (src_ip, sport), (ip.dst, dport)
            key = (ip.p, *a, *b) if a <= b else (ip.p, *b, *a)
            conn = connections.get(key)
            if conn is None:
                connections[key] = [1, size]
            else:
                conn[0] += 1
                conn[1] += size
    return {
        "packets": packets,
        "undecoded": undecoded,
        "devices": len(devices),
        "connections": len(connections),
    }


def nfstream_loop(path: str) -> dict[str, int]:
    """Peer: nfstream flow metering without statistics or dissection, one meter."""
    from nfstream import NFStreamer

    streamer = NFStreamer(source=path, statistical_analysis=False, n_dissections=0, n_meters=1)
    flows = packets = 0
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
    return {"flows": flows, "packets_in_flows": packets}


_CHILD_CODE = (
    "import json, sys; sys.path.insert(0, {dir!r}); import ingest; "
    "print(json.dumps(ingest.{func}(sys.argv[1])))"
)


def peer_command(peer: str, path: Path) -> list[str]:
    if peer == "tshark":
        fields = [arg for name in TSHARK_FIELDS for arg in ("-e", name)]
        return ["tshark", "-n", "-r", str(path), "-T", "fields", *fields]
    func = {"dpkt": "dpkt_loop", "nfstream": "nfstream_loop"}[peer]
    code = _CHILD_CODE.format(dir=str(Path(__file__).resolve().parent), func=func)
    return [sys.executable, "-c", code, str(path)]


def peer_details(m: Measurement) -> dict[str, Any]:
    """The JSON line a Python peer prints last (nfstream may print warnings before it)."""
    for line in reversed(m.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def bench_peer(peer: str, path: Path, packets: int, cpu: int) -> ToolResult:
    warm_page_cache(path)
    with tempfile.TemporaryDirectory(prefix="tapwatch-bench-home-") as home:
        # An empty HOME keeps tshark on default preferences and profiles.
        env = {**os.environ, "HOME": home}
        m = run_measured(
            pinned(peer_command(peer, path), cpu), env=env, discard_stdout=peer == "tshark"
        )
    if not m.ok:
        raise BenchError(describe_failure(f"peer {peer}", m))
    result = ToolResult(
        name=peer,
        label=PEER_LABELS[peer],
        input=display_path(path),
        packets=packets,
        on_slice=True,
        runs_seconds=[m.seconds],
        peak_rss_kib=m.peak_rss_kib,
        details={"command": shlex.join(m.command), **peer_details(m)},
    )
    log(f"  {peer}: {m.seconds:.2f} s, {result.pps:,.0f} packets/s")
    return result


def bench_peers(
    names: list[str], path: Path, packets: int, cpu: int
) -> tuple[list[ToolResult], dict[str, str]]:
    """Run each peer.  A failing peer is reported rather than fatal, so that one broken
    peer does not throw away a long tapwatch measurement."""
    results: list[ToolResult] = []
    errors: dict[str, str] = {}
    for name in names:
        try:
            results.append(bench_peer(name, path, packets, cpu))
        except BenchError as exc:
            log(f"error: {exc}")
            errors[name] = str(exc)
    return results, errors


# --------------------------------------------------------------------------- report


def fmt_mb(kib: int) -> str:
    return f"{kib * 1024 / 1e6:,.0f} MB"


def verdict(ok: bool | None) -> str:
    return "skipped" if ok is None else ("PASS" if ok else "FAIL")


def _ratio(a: ToolResult | None, b: ToolResult | None, target: float) -> dict[str, Any]:
    value = a.pps / b.pps if a and b and b.pps else None
    return {"value": value, "target": target, "pass": None if value is None else value >= target}


def evaluate_targets(
    tapwatch: ToolResult, scaled: ToolResult | None, baseline: ToolResult | None = None,
    no_detect: ToolResult | None = None,
) -> dict[str, Any]:
    peak_kib = max([tapwatch.peak_rss_kib] + ([scaled.peak_rss_kib] if scaled else []))
    ratio = (
        scaled.peak_rss_kib / tapwatch.peak_rss_kib if scaled and tapwatch.peak_rss_kib else None
    )
    return {
        "pps": {"value": tapwatch.pps, "target": TARGET_PPS, "pass": tapwatch.pps >= TARGET_PPS},
        "peak_rss_mb": {
            "value": peak_kib * 1024 / 1e6,
            "target": TARGET_RSS_MB,
            "pass": peak_kib * 1024 / 1e6 < TARGET_RSS_MB,
        },
        "flat_ratio": {
            "value": ratio,
            "target": TARGET_FLAT_RATIO,
            "pass": None if ratio is None else ratio <= TARGET_FLAT_RATIO,
        },
        # dissectors: --no-detect (dissect, identify) against --no-dissect (inventory only);
        # detection: the full run against --no-detect
        "dissect_ratio": _ratio(no_detect or tapwatch, baseline, TARGET_DISSECT_RATIO),
        "detect_ratio": _ratio(tapwatch, no_detect, TARGET_DETECT_RATIO),
    }


def table_row(r: ToolResult, tapwatch_pps: float) -> str:
    packets = f"{r.packets:,}" + (" (slice)" if r.on_slice else "")
    ratio = tapwatch_pps / r.pps if r.pps else float("nan")
    return (
        f"{r.label:<18} {packets:>19} {r.seconds:>9.2f} {r.pps / 1e6:>8.3f}"
        f" {ratio:>11.1f} {fmt_mb(r.peak_rss_kib):>10}"
    )


def render_report(results: dict[str, Any]) -> str:
    tw: ToolResult = results["tapwatch"]
    peers: list[ToolResult] = results["peers"]
    scaled: ToolResult | None = results["scaled"]
    targets = results["targets"]
    lines = [
        f"capture: {tw.input}  {results['capture_bytes']:,} bytes  {tw.packets:,} packets",
        f"tapwatch: {tw.details['command']}",
        f"  pinned to CPU {results['cpu']}; best of {len(tw.runs_seconds)} run(s): "
        + ", ".join(f"{s:.2f}" for s in tw.runs_seconds)
        + " s; "
        + f"SQLite file {tw.details['db_bytes'] / 1e6:,.1f} MB",
        "",
        f"{'tool':<18} {'packets':>19} {'seconds':>9} {'Mpps':>8} {'tapwatch ×':>11}"
        f" {'peak RSS':>10}",
        table_row(tw, tw.pps),
    ]
    for extra in ("no_detect", "baseline"):
        if results.get(extra) is not None:
            lines.append(table_row(results[extra], tw.pps))
    lines += [table_row(p, tw.pps) for p in peers]
    errors: dict[str, str] = results["peer_errors"]
    lines += [f"{PEER_LABELS[name]:<18} {'FAILED (see stderr)':>19}" for name in errors]
    if peers or errors:
        sliced = results["slice"]
        lines += [
            "",
            f"peers ran on a slice of {sliced['packets']:,} packets ({sliced['path']}),",
            "pinned to the same CPU; their packets/s are scaled from the slice;",
            "'tapwatch ×' = tapwatch packets/s / peer packets/s (above 1: tapwatch is faster)",
        ]
        for p in peers:
            work = {k: v for k, v in p.details.items() if k != "command"}
            if work:
                lines.append(f"  {p.label}: " + ", ".join(f"{k} {v:,}" for k, v in work.items()))
    lines.append("")
    if scaled is not None:
        ratio = targets["flat_ratio"]["value"]
        lines += [
            f"memory: 1× {fmt_mb(tw.peak_rss_kib)}, {SCALE_FACTOR}× {fmt_mb(scaled.peak_rss_kib)}"
            f" (ratio {ratio:.2f}x)",
            f"  {SCALE_FACTOR}× capture: {scaled.input}  {results['scaled_bytes']:,} bytes"
            f"  {scaled.packets:,} packets  {scaled.seconds:.2f} s  {scaled.pps / 1e6:.2f} Mpps",
        ]
    else:
        lines.append(f"memory: 1× {fmt_mb(tw.peak_rss_kib)}, {SCALE_FACTOR}× skipped")
    lines.append(
        f"targets: ≥{TARGET_PPS / 1e6:.1f} Mpps end-to-end: {verdict(targets['pps']['pass'])}; "
        f"peak RSS <{TARGET_RSS_MB} MB: {verdict(targets['peak_rss_mb']['pass'])}; "
        f"flat ({SCALE_FACTOR}×/1× ≤ {TARGET_FLAT_RATIO}): "
        f"{verdict(targets['flat_ratio']['pass'])}"
    )
    dr = targets["dissect_ratio"]
    if dr["value"] is not None:
        lines.append(
            f"dissectors on / off (both without detection): {dr['value']:.2f} of the "
            f"inventory-only throughput (target ≥ {TARGET_DISSECT_RATIO}): {verdict(dr['pass'])}"
        )
    de = targets["detect_ratio"]
    if de["value"] is not None:
        lines.append(
            f"detection on / off (both with dissectors): {de['value']:.2f} of the throughput "
            f"without detection (target ≥ {TARGET_DETECT_RATIO}): {verdict(de['pass'])}"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def results_json(results: dict[str, Any]) -> dict[str, Any]:
    scaled: ToolResult | None = results["scaled"]
    return {
        "timestamp": results["timestamp"],
        "machine": machine_info(),
        "cpu": results["cpu"],
        "capture": {
            "path": results["tapwatch"].input,
            "bytes": results["capture_bytes"],
            "packets": results["tapwatch"].packets,
        },
        "tapwatch": results["tapwatch"].to_json(),
        "tapwatch_no_dissect": results["baseline"].to_json() if results["baseline"] else None,
        "tapwatch_no_detect": results["no_detect"].to_json() if results.get("no_detect") else None,
        "slice": results["slice"] if results["peers"] or results["peer_errors"] else None,
        "peers": [p.to_json() for p in results["peers"]],
        "peer_errors": results["peer_errors"],
        "scaled": None
        if scaled is None
        else {
            **scaled.to_json(),
            "factor": SCALE_FACTOR,
            "bytes": results["scaled_bytes"],
        },
        "targets": results["targets"],
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Throughput and memory benchmark for `tapwatch analyze`: end-to-end packets/s "
            "and peak RSS on one core, peers (tshark, dpkt, nfstream) on a slice of the "
            "same capture, and a 4x capture to check that memory stays flat. Captures are "
            "built from ../shared/captures with ../shared/bench/make_bench_pcap.sh and "
            "cached in benchmarks/.data/."
        ),
        epilog=(
            "Exit status: 0 when every run succeeded (and, with --check, every target "
            "passed); 1 when a run failed or, with --check, a target failed."
        ),
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--target-bytes",
        type=int,
        default=DEFAULT_TARGET_BYTES,
        metavar="N",
        help="size of the 1x capture in bytes (default: %(default)s)",
    )
    size.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run on a {QUICK_TARGET_BYTES:,}-byte capture",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        metavar="N",
        help="tapwatch runs on the 1x capture, each interleaved with a --no-detect and a "
             "--no-dissect run; the best time of each is reported (default: 5)",
    )
    parser.add_argument(
        "--peer-packets",
        type=int,
        default=DEFAULT_PEER_PACKETS,
        metavar="N",
        help="peers run on the first N packets of the capture (default: %(default)s)",
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        choices=PEERS,
        default=list(PEERS),
        metavar="PEER",
        help=f"peers to run, any of {', '.join(PEERS)} (default: all)",
    )
    parser.add_argument("--skip-peers", action="store_true", help="run no peers")
    parser.add_argument(
        "--skip-baseline",
        action="store_true",
        help="skip the inventory-only run (tapwatch --no-dissect) that prices the dissectors",
    )
    parser.add_argument(
        "--skip-4x",
        action="store_true",
        help=f"skip the {SCALE_FACTOR}x capture (memory flatness check)",
    )
    parser.add_argument(
        "--tapwatch-cmd",
        metavar="CMD",
        help=(
            "command to benchmark instead of the tapwatch next to this interpreter "
            f"(default: 'tapwatch {DEFAULT_TAPWATCH_TEMPLATE}'); {{capture}} and {{db}} are "
            "replaced by the capture and a fresh SQLite path, and the capture is appended "
            "when {capture} is absent. Useful to compare builds, e.g. "
            "--tapwatch-cmd '/other/.venv/bin/tapwatch analyze {capture} --db {db}'"
        ),
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=0,
        metavar="N",
        help="CPU every measured run is pinned to with taskset (default: 0)",
    )
    parser.add_argument(
        "--tmpdir",
        metavar="DIR",
        help="directory for the temporary SQLite files (default: the system temp dir)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails (for CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.target_bytes = QUICK_TARGET_BYTES
    if args.skip_peers:
        args.peers = []
    for name in ("target_bytes", "repeat", "peer_packets"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def byte_compile() -> None:
    """Compile tapwatch's modules to bytecode first, as installing a package does, so that
    no run is charged for compiling source (with PYTHONDONTWRITEBYTECODE set, Python would
    compile every module again in every run, more of them with dissectors on)."""
    import compileall

    import tapwatch

    compileall.compile_dir(Path(tapwatch.__file__).parent, quiet=1)


WARM_UP_PACKETS = 200_000


def compile_kernels(capture: Path, cpu: int, tmpdir: str | None) -> None:
    """Run tapwatch once, untimed, on the first packets of the capture so that numba
    compiles its kernels into its on-disk cache, as the first use after installing does;
    otherwise the first measured run is charged for it (about 15 s and 150 MB)."""
    warm_up = ensure_slice(capture, WARM_UP_PACKETS)
    log(f"compiling tapwatch's kernels on {display_path(warm_up)} (untimed) ...")
    run_tapwatch_once(warm_up, None, cpu, tmpdir)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tools = ["bash", "taskset", "capinfos", "editcap"] + (
        ["tshark"] if "tshark" in args.peers else []
    )
    require_tools(tools)
    capture = ensure_capture(args.target_bytes)
    packets = packet_count(capture)
    log(f"capture {display_path(capture)}: {capture.stat().st_size:,} bytes, {packets:,} packets")

    if args.tapwatch_cmd is None:
        byte_compile()
        compile_kernels(capture, args.cpu, args.tmpdir)
    variants: list[tuple[str | None, str | None]] = [(None, args.tapwatch_cmd)]
    if args.tapwatch_cmd is None and not args.skip_baseline:
        for flag in ("--no-detect", "--no-dissect"):
            command = shlex.join(default_tapwatch() + shlex.split(DEFAULT_TAPWATCH_TEMPLATE) + [flag])
            variants.append((f"  {flag}", command))
    log(f"tapwatch on the 1x capture, {args.repeat} interleaved round(s) of "
        f"{' and '.join((lb or 'tapwatch analyze').strip() for lb, _ in variants)} ...")
    measured = bench_variants(capture, packets, args.repeat, variants, args.cpu, args.tmpdir)
    tapwatch = measured[0]
    no_detect: ToolResult | None = measured[1] if len(measured) > 1 else None
    baseline: ToolResult | None = measured[2] if len(measured) > 2 else None

    peers: list[ToolResult] = []
    peer_errors: dict[str, str] = {}
    slice_packets = min(args.peer_packets, packets)
    sliced = capture
    if args.peers:
        if slice_packets < packets:
            sliced = ensure_slice(capture, slice_packets)
        log(f"peers on {display_path(sliced)} ({slice_packets:,} packets) ...")
        peers, peer_errors = bench_peers(args.peers, sliced, slice_packets, args.cpu)

    scaled: ToolResult | None = None
    scaled_bytes = 0
    if not args.skip_4x:
        big = ensure_capture(args.target_bytes * SCALE_FACTOR)
        scaled_bytes = big.stat().st_size
        log(f"tapwatch on the {SCALE_FACTOR}x capture {display_path(big)} ...")
        scaled = bench_tapwatch(big, packet_count(big), 1, args.tapwatch_cmd, args.cpu, args.tmpdir)

    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": args.cpu,
        "capture_bytes": capture.stat().st_size,
        "tapwatch": tapwatch,
        "baseline": baseline,
        "no_detect": no_detect,
        "peers": peers,
        "peer_errors": peer_errors,
        "slice": {"path": display_path(sliced), "packets": slice_packets},
        "scaled": scaled,
        "scaled_bytes": scaled_bytes,
        "targets": evaluate_targets(tapwatch, scaled, baseline, no_detect),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_report(results))
    if args.json:
        args.json.write_text(json.dumps(results_json(results), indent=2) + "\n")
        log(f"wrote {args.json}")
    if results["peer_errors"]:
        log(f"error: peer(s) failed: {', '.join(results['peer_errors'])}")
        return 1
    failed = [k for k, t in results["targets"].items() if t["pass"] is False]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
