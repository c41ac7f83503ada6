#!/usr/bin/env bash
# Tunnel with bearer auth + identity assertion + per-message Cedar policy +
# audit log (everything a production relay does per request) vs --no-auth,
# same upstream, plain-HTTP front, alternating rounds; prints medians and the
# ratio. Rate limits are turned off for the load (one identity would hit them).
#   bench/auth-overhead.sh [ROUNDS] [SECONDS]     (release binaries must be built)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ROUNDS="${1:-3}" SECS="${2:-3}"
W="$(mktemp -d)"; PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"' EXIT INT TERM
"$BIN/bench-upstream" --listen 127.0.0.1:0 >"$W/up" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do grep -q 127 "$W/up" 2>/dev/null && break; sleep 0.1; done
UP="$(grep -oE '127.0.0.1:[0-9]+' "$W/up" | head -1)"
start() { # name extra-args...
  local n=$1; shift
  "$BIN/mcp-relay" serve --dev --state "$W/$n" --https 127.0.0.1:0 --quic 127.0.0.1:0 --http 127.0.0.1:0 "$@" >"$W/$n.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do [ -s "$W/$n/endpoints.json" ] && break; sleep 0.1; done
  local https; https=$(python3 -c "import json;print(json.load(open('$W/$n/endpoints.json'))['https'].split(':')[-1])")
  MCP_AGENT_RUNTIME_DIR="$W/$n-run" MCP_AGENT_TOKEN="$("$BIN/mcp-relay" agent-tokens create --state "$W/$n" 2>/dev/null)" \
    "$BIN/mcp-agent" connect --relay "https://localhost:$https" --ca "$W/$n/dev-ca.pem" --name b --upstream "http://$UP/mcp" --quiet ${AGENT_EXTRA:-} >"$W/$n-agent.log" 2>&1 & PIDS+=($!)
  sleep 1.5
}
start off --no-auth
printf '[rate_limits]\nper_identity = 0\nper_tool = 0\n' >"$W/on.toml"
start on --config "$W/on.toml"
"$BIN/mcp-relay" users add bench@example.com --state "$W/on" >/dev/null 2>&1
TOKEN="$("$BIN/mcp-relay" tokens issue --user bench@example.com --tunnel b --ttl 1h --state "$W/on" 2>/dev/null)"
url() { echo "http://$(python3 -c "import json;print(json.load(open('$W/$1/endpoints.json'))['http'])")/t/b/mcp"; }
OFF="$(url off)" ON="$(url on)"
for c in 1 64; do
  : >"$W/off.$c"; : >"$W/on.$c"
  for r in $(seq "$ROUNDS"); do
    "$BIN/loadgen" --url "$OFF" -c "$c" -d "$SECS" --warmup 0.5 >>"$W/off.$c"
    LOADGEN_BEARER="$TOKEN" "$BIN/loadgen" --url "$ON" -c "$c" -d "$SECS" --warmup 0.5 >>"$W/on.$c"
  done
done
python3 - "$W" <<'PY'
import json, statistics, sys
w = sys.argv[1]
def med(f, k): return statistics.median(json.loads(l)[k] for l in open(f) if l.strip())
print(f"{'':28}{'auth off':>12}{'auth on':>12}{'on/off':>8}")
for c in (1, 64):
    for k, label in (("p50_us", "p50 (us)"), ("p99_us", "p99 (us)"), ("rps", "req/s")):
        a, b = med(f"{w}/off.{c}", k), med(f"{w}/on.{c}", k)
        print(f"c={c:<3} {label:<22}{a:>12.1f}{b:>12.1f}{b/a:>8.2f}")
    errs = sum(json.loads(l)["errors"] for l in open(f"{w}/on.{c}") if l.strip())
    print(f"c={c:<3} errors with auth on: {errs}")
PY
