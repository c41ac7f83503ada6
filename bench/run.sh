#!/usr/bin/env bash
# bench/run.sh [--quick]
#
# Side-by-side benchmark on one upstream: direct (client -> upstream) vs the
# tunnel through the relay's plain-HTTP front vs the tunnel through its HTTPS
# front, at concurrency 1 (latency) and 64 (throughput), plus a raw loopback
# TCP ping-pong as the physical reference. Contenders are alternated
# (A B C D A B C D ...) for N rounds and the medians are reported.
#
# Builds everything it runs (release), starts every process on 127.0.0.1 in
# a temp dir and stops them all on exit or Ctrl-C. Writes
# bench/results/latest.json. See bench/README.md.
set -euo pipefail

usage() {
    echo "usage: bench/run.sh [--quick]"
    echo "  full:    7 rounds x 10 s per contender and scenario (~8 min)"
    echo "  --quick: 3 rounds x 3 s (~1.5 min)"
    echo "env: CARGO_TARGET_DIR (default <repo>/target); BENCH_NO_BUILD=1 reuses the binaries already built there"
}

MODE=full ROUNDS=7 DURATION=10 WARMUP=1 TCP_DURATION=3
case "${1:-}" in
    "") ;;
    --quick) MODE=quick ROUNDS=3 DURATION=3 WARMUP=0.5 TCP_DURATION=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release"
RESULTS="$HERE/results"
TUNNEL=bench

# Settings from the caller's environment must not change what is measured.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^MCP_(RELAY|AGENT)_' || true)
export RUST_LOG=info

log() { printf '==> %s\n' "$*" >&2; }

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    log "BENCH_NO_BUILD=1: using the binaries in $BIN"
else
    log "building release binaries: mcp-relay, mcp-agent, bench (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --quiet -p mcp-relay -p mcp-agent -p mcp-tunnel-bench)
fi
for b in mcp-relay mcp-agent bench-upstream loadgen bench-report; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b (build it, or drop BENCH_NO_BUILD)"; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-bench.XXXXXX")"
PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Show why a run failed; an interrupt (130/143) needs no post-mortem.
    if [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ]; then
        for f in "$WORK"/*.log; do
            [ -s "$f" ] || continue
            echo "--- last lines of $(basename "$f")" >&2
            tail -n 20 "$f" >&2
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for WHAT PID CMD...: poll CMD for up to 20 s while PID is alive.
wait_for() {
    local what=$1 pid=$2
    shift 2
    for _ in $(seq 200); do
        if "$@"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$what: the process exited"
            return 1
        fi
        sleep 0.1
    done
    log "$what: timed out after 20 s"
    return 1
}

# json_str KEY FILE: the string value of "KEY" in a flat JSON object.
json_str() {
    grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$2" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/'
}

log "starting bench-upstream"
"$BIN/bench-upstream" --listen 127.0.0.1:0 >"$WORK/upstream.addr" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_for "bench-upstream" "$!" test -s "$WORK/upstream.addr"
UPSTREAM="$(head -n 1 "$WORK/upstream.addr")"

log "starting mcp-relay (dev)"
STATE="$WORK/relay-state"
mkdir -p "$STATE" "$WORK/xdg-config"
XDG_CONFIG_HOME="$WORK/xdg-config" "$BIN/mcp-relay" serve --dev --state "$STATE" \
    --https 127.0.0.1:0 --quic 127.0.0.1:0 --http 127.0.0.1:0 --no-auth >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
wait_for "mcp-relay" "$!" test -s "$STATE/endpoints.json"
RELAY_HTTP="$(json_str http "$STATE/endpoints.json")"
PUBLIC_URL="$(json_str public_url "$STATE/endpoints.json")"

TOKEN="$(XDG_CONFIG_HOME="$WORK/xdg-config" "$BIN/mcp-relay" agent-tokens create --state "$STATE" --label bench 2>>"$WORK/relay.log")"

log "starting mcp-agent"
mkdir -p -m 700 "$WORK/agent-run"
MCP_AGENT_RUNTIME_DIR="$WORK/agent-run" MCP_AGENT_TOKEN="$TOKEN" XDG_CONFIG_HOME="$WORK/xdg-config" \
    "$BIN/mcp-agent" connect --relay "$PUBLIC_URL" --ca "$STATE/dev-ca.pem" --name "$TUNNEL" \
    --upstream "http://$UPSTREAM/mcp" --quiet >"$WORK/agent.out" 2>"$WORK/agent.log" &
PIDS+=($!)
wait_for "mcp-agent" "$!" grep -q "Public MCP URL" "$WORK/agent.out"
unset TOKEN

declare -A URL=(
    [direct]="http://$UPSTREAM/mcp"
    [http]="http://$RELAY_HTTP/t/$TUNNEL/mcp"
    [https]="$PUBLIC_URL/t/$TUNNEL/mcp"
)
log "direct: ${URL[direct]}  tunnel/http: ${URL[http]}  tunnel/https: ${URL[https]}"

ROUNDS_FILE="$WORK/rounds.jsonl"
: >"$ROUNDS_FILE"

# measure SCENARIO CONCURRENCY CONTENDER ROUND
measure() {
    local scenario=$1 conc=$2 who=$3 round=$4 args line
    case "$who" in
        tcp) args=(--tcp-rtt --duration "$TCP_DURATION") ;;
        https) args=(--url "${URL[https]}" --ca "$STATE/dev-ca.pem" --duration "$DURATION") ;;
        *) args=(--url "${URL[$who]}" --duration "$DURATION") ;;
    esac
    # In the background so Ctrl-C/TERM reach the trap at once.
    "$BIN/loadgen" "${args[@]}" --concurrency "$conc" --warmup "$WARMUP" \
        >"$WORK/loadgen.out" 2>>"$WORK/loadgen.log" &
    local pid=$!
    PIDS+=("$pid")
    if ! wait "$pid"; then
        log "loadgen failed: $scenario $who round $round"
        return 1
    fi
    line="$(head -n 1 "$WORK/loadgen.out")"
    printf '{"scenario":"%s","contender":"%s","round":%d,"result":%s}\n' \
        "$scenario" "$who" "$round" "$line" >>"$ROUNDS_FILE"
    printf '    %-4s round %d/%d  %-6s %s\n' "$scenario" "$round" "$ROUNDS" "$who" "$line" >&2
}

log "measuring ($MODE: $ROUNDS rounds x ${DURATION} s, warm-up ${WARMUP} s; contenders alternated)"
for spec in c1:1 c64:64; do
    scenario=${spec%%:*} conc=${spec##*:}
    for round in $(seq "$ROUNDS"); do
        for who in direct http https tcp; do
            measure "$scenario" "$conc" "$who" "$round"
        done
    done
done

echo >&2
"$BIN/bench-report" --rounds "$ROUNDS_FILE" --out "$RESULTS/latest.json" --mode "$MODE" \
    --rounds-per-contender "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP"
log "wrote ${RESULTS#"$ROOT"/}/latest.json"
