#!/usr/bin/env bash
# bench/restart.sh [ROUNDS]
#
# The drain-and-restart gap as a client sees it: runs the end-to-end
# restart scenarios (tests/tests/restart.rs: 6 client loops calling tools
# through 3 tunnels while the relay is restarted) ROUNDS times (default 5)
# in release builds, both ways a relay is restarted:
#   replace  `mcp-relay serve --replace` starts beside the old relay and
#            sends it SIGTERM (hosts without systemd)
#   socket   socket activation as systemd does it (tests/py/socket_supervisor.py
#            holds the sockets; SIGTERM, wait, start again)
# and prints each round and the medians:
#   handover    SIGTERM to the old relay -> the new one listening
#   agents back slowest agent serving again, after the new relay listened
#   steady p50/p99  call latency in the second before SIGTERM
#   during max  slowest call that overlapped the hand-over
#   extra       during max - steady p50 (target: <= 1000 ms)
#   failed      calls that failed after the client's retries (target: 0)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
echo "building (release)..." >&2
cargo build --release --workspace -q
cargo test --release -p mcp-tunnel-e2e --test restart --no-run -q 2>/dev/null
lines=()
for i in $(seq 1 "$rounds"); do
    # One scenario at a time: they would share the 2 cores otherwise.
    for t in replacing_the_relay socket_activated; do
        line=$(cargo test --release -q -p mcp-tunnel-e2e --test restart "$t" -- --nocapture 2>&1 | grep '^RESTART ' || true)
        [ -n "$line" ] || { echo "round $i ($t): the scenario failed; rerun the test for details" >&2; exit 1; }
        lines+=("$line")
        echo "round $i: ${line#RESTART }" >&2
    done
done
printf '%s\n' "${lines[@]}" | python3 -c '
import sys, statistics
keys = [("handover_ms", "handover (ms)"), ("agents_back_ms", "agents back (ms)"),
        ("steady_p50_ms", "steady p50 (ms)"), ("steady_p99_ms", "steady p99 (ms)"),
        ("during_calls", "calls in hand-over"), ("during_max_ms", "during max (ms)"),
        ("extra_worst_ms", "extra worst (ms)"), ("failed", "failed calls"), ("retried", "retried")]
all_rows = [dict(kv.split("=") for kv in l.split()[1:]) for l in sys.stdin if l.strip()]
for how in sorted({r["how"] for r in all_rows}):
    rows = [r for r in all_rows if r["how"] == how]
    print(f"\n{how}")
    print("| figure | " + " | ".join(f"r{i+1}" for i in range(len(rows))) + " | median |")
    print("|---|" + "---|" * (len(rows) + 1))
    for k, name in keys:
        vals = [float(r[k]) for r in rows]
        print(f"| {name} | " + " | ".join(f"{v:g}" for v in vals) + f" | {statistics.median(vals):g} |")
'
