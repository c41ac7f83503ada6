#!/usr/bin/env python3
"""Draws the benchmark's results as a PNG: one bar chart per metric.

    python chart.py RESULTS.json OUT.png

RESULTS.json is what bench/run.sh writes (bench/results/latest.json). Every
part is optional; panels whose data is missing are left out:

    machine    {"cpu_model" (or "cpu"), "nproc", "kernel", "mem_mib"}
    run        {"mode", "rounds", "duration_s", ...}
    scenarios  {"c1"|"c64"|"c256"|"bulk": {contender: {"median": {"p50_us", "rps", "mbps", ...}}}}
    sse        {"sse": [{"streams", "deliver_all_ms", ...}]} (or the bare list)
    swarm      {"idle": [{"agents", "relay_kib_per_agent", ...}], "reconnect": {"agents", "all_serving_ms"}}
    sqlite     {name: {"ours", "reference", "ratio"|"speedup"}}

Needs matplotlib (bench/peers.sh installs it into the bench venv).
"""

import json
import math
import sys

# Contenders in table order, with their labels (as in bench/src/report.rs).
CONTENDERS = [
    ("direct", "direct"),
    ("rathole-tcp", "rathole/tcp"),
    ("rathole-noise", "rathole/noise"),
    ("bore", "bore"),
    ("tunnel-http", "ours/http"),
    ("tunnel-https-auth", "ours/https+auth"),
    ("tcp", "raw tcp"),
]
LABEL = dict(CONTENDERS)
ORDER = {name: i for i, (name, _) in enumerate(CONTENDERS)}

OURS_COLOR = "#1f77b4"
PEER_COLOR = "#9e9e9e"
DIRECT_COLOR = "#4d4d4d"
REF_COLOR = "#c7c7c7"

# (scenario, field, title, unit, higher is better)
REQUEST_PANELS = [
    ("c1", "p50_us", "c=1 latency p50", "µs", False),
    ("c64", "rps", "c=64 throughput", "req/s", True),
    ("c256", "rps", "c=256 throughput", "req/s", True),
    ("bulk", "mbps", "bulk transfer", "MB/s", True),
]


def num(v):
    """v as a finite float, or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def fmt(v):
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def color_of(name):
    if name.startswith("tunnel") or name == "ours":
        return OURS_COLOR
    if name in ("direct", "tcp"):
        return DIRECT_COLOR
    if name == "reference":
        return REF_COLOR
    return PEER_COLOR


def machine_line(data):
    m = data.get("machine") or {}
    r = data.get("run") or {}
    parts = []
    cpu = m.get("cpu_model") or m.get("cpu")
    if cpu:
        parts.append(str(cpu))
    if num(m.get("nproc")):
        parts.append(f"{int(m['nproc'])} CPUs")
    if m.get("kernel"):
        parts.append(f"Linux {m['kernel']}")
    if num(m.get("mem_mib")):
        parts.append(f"{num(m['mem_mib']) / 1024:.1f} GiB RAM")
    run = []
    if r.get("mode"):
        run.append(f"{r['mode']} run")
    if num(r.get("rounds")) and num(r.get("duration_s")):
        run.append(f"median of {int(r['rounds'])} rounds x {num(r['duration_s']):g} s")
    if run:
        parts.append(", ".join(run))
    return " · ".join(parts)


def request_panels(data):
    """Panels of the request scenarios: one bar per contender."""
    scenarios = data.get("scenarios") or {}
    panels = []
    for scen, field, title, unit, higher in REQUEST_PANELS:
        contenders = scenarios.get(scen) or {}
        bars = []
        for name, c in contenders.items():
            v = num(((c or {}).get("median") or {}).get(field))
            if v is not None:
                bars.append((name, v))
        if not bars:
            continue
        bars.sort(key=lambda b: (ORDER.get(b[0], len(ORDER)), b[0]))
        base = dict(bars).get("direct")
        labels = []
        for _, v in bars:
            ratio = f"\n{v / base:.2f}x direct" if base and base > 0 and v != base else ""
            labels.append(f"{fmt(v)}{ratio}")
        panels.append(
            {
                "title": f"{title} ({unit}, {'higher' if higher else 'lower'} is better)",
                "names": [LABEL.get(n, n) for n, _ in bars],
                "values": [v for _, v in bars],
                "labels": labels,
                "colors": [color_of(n) for n, _ in bars],
            }
        )
    return panels


def series_panel(rows, x_key, y_key, title, x_fmt, scale=1.0):
    """A panel of one bar per row of a list (e.g. per number of streams)."""
    bars = []
    for e in rows if isinstance(rows, list) else []:
        if not isinstance(e, dict):
            continue
        x, y = num(e.get(x_key)), num(e.get(y_key))
        if x is not None and y is not None:
            bars.append((x, y * scale))
    if not bars:
        return None
    bars.sort()
    return {
        "title": title,
        "names": [x_fmt(x) for x, _ in bars],
        "values": [y for _, y in bars],
        "labels": [fmt(y) for _, y in bars],
        "colors": [OURS_COLOR] * len(bars),
    }


def extra_panels(data):
    panels = []
    sse = data.get("sse")
    if isinstance(sse, dict):
        sse = sse.get("sse")
    p = series_panel(
        sse, "streams", "deliver_all_ms",
        "SSE: one event to every stream (ms, lower is better)",
        lambda x: f"{x:,.0f} streams",
    )
    if p:
        panels.append(p)

    swarm = data.get("swarm") if isinstance(data.get("swarm"), dict) else {}
    p = series_panel(
        swarm.get("idle"), "agents", "relay_kib_per_agent",
        "relay memory per idle agent (KiB, lower is better)",
        lambda x: f"{x:,.0f} agents",
    )
    if p:
        panels.append(p)
    rec = swarm.get("reconnect")
    if isinstance(rec, dict) and num(rec.get("all_serving_ms")) is not None:
        secs = num(rec["all_serving_ms"]) / 1000.0
        agents = num(rec.get("agents"))
        panels.append(
            {
                "title": "relay restart: all agents serving again (s, lower is better)",
                "names": [f"{agents:,.0f} agents" if agents is not None else "agents"],
                "values": [secs],
                "labels": [fmt(secs)],
                "colors": [OURS_COLOR],
            }
        )

    sqlite = data.get("sqlite")
    if isinstance(sqlite, dict):
        for key, v in sqlite.items():
            if not isinstance(v, dict):
                continue
            ours, ref = num(v.get("ours")), num(v.get("reference"))
            if ours is None or ref is None:
                continue
            ratio = num(v.get("ratio")) or num(v.get("speedup"))
            if ratio is None and ours and ref:
                ratio = ours / ref if key.endswith("_per_s") else ref / ours
            title = {
                "ten_rows_calls_per_s": "SQLite 10-row read_query (calls/s, higher is better)",
                "ten_thousand_rows_ms": "SQLite 10,000-row read_query (ms, lower is better)",
            }.get(key, f"SQLite {key.replace('_', ' ')}")
            panels.append(
                {
                    "title": title,
                    "names": ["ours", "mcp-server-sqlite"],
                    "values": [ours, ref],
                    "labels": [fmt(ours) + (f"\n{ratio:.2f}x" if ratio else ""), fmt(ref)],
                    "colors": [OURS_COLOR, REF_COLOR],
                }
            )
    return panels


def draw(data, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = request_panels(data) + extra_panels(data)
    subtitle = machine_line(data)
    if not panels:
        fig = plt.figure(figsize=(8, 2.5))
        fig.text(0.5, 0.5, "no results to chart", ha="center", va="center", fontsize=14)
        fig.text(0.5, 0.15, subtitle, ha="center", fontsize=9, color="#555555")
        fig.savefig(out, dpi=110)
        return 0

    ncols = 1 if len(panels) == 1 else 2 if len(panels) <= 4 else 3
    nrows = math.ceil(len(panels) / ncols)
    header = 0.85  # inches above the panels for the title and the machine line
    height = 3.9 * nrows + header
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, height), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        n = len(p["values"])
        xs = range(n)
        bars = ax.bar(xs, p["values"], color=p["colors"], width=0.65)
        pad = max(0.0, (3 - n) / 2)  # keep bars of sparse panels narrow and centred
        ax.set_xlim(-0.5 - pad, n - 0.5 + pad)
        ax.bar_label(bars, labels=p["labels"], padding=2, fontsize=8)
        ax.set_title(p["title"], fontsize=10)
        ax.set_xticks(list(xs))
        tilt = n > 3
        ax.set_xticklabels(p["names"], rotation=25 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_ylim(0, max(p["values"]) * 1.28 or 1)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)

    fig.text(0.5, 1 - 0.3 / height, "MCP tunnel benchmark", ha="center", va="center", fontsize=14, fontweight="bold")
    fig.text(0.5, 1 - 0.6 / height, subtitle, ha="center", va="center", fontsize=9, color="#555555")
    fig.tight_layout(rect=(0, 0, 1, 1 - header / height))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return len(panels)


def main(argv):
    if len(argv) != 3:
        print("usage: chart.py RESULTS.json OUT.png", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        print(f"chart.py: cannot read {argv[1]}: {e}", file=sys.stderr)
        return 1
    if not isinstance(data, dict):
        print(f"chart.py: {argv[1]} is not a JSON object", file=sys.stderr)
        return 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("chart.py: matplotlib is missing (bench/peers.sh install puts it in the bench venv)", file=sys.stderr)
        return 1
    n = draw(data, argv[2])
    print(f"chart.py: wrote {argv[2]} ({n} panels)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
