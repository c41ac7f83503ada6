#!/usr/bin/env bash
# bench/run.sh [--quick] [--only GROUPS]
#
# The side-by-side benchmark suite: our tunnel and SQLite tool against going
# direct, rathole 0.5 (tcp and noise), bore, and the reference
# mcp-server-sqlite, in one run, with the raw loopback TCP figures as the
# physical reference. Contenders are alternated (A B C … A B C …) for N
# rounds and the medians are reported: one table on stdout, and
# bench/results/latest.{json,png}.
#
# Installs its peers on first use (cargo install / pip into a cache dir, see
# bench/peers.sh), builds what it runs (release), starts every process on
# 127.0.0.1 in a temp dir and stops them all on exit or Ctrl-C. See
# bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--only GROUPS]
  full:     5 rounds x 8 s per contender and request scenario, SSE 1k+10k,
            idle agents 1k+10k, reconnect 1k, SQLite 5 rounds (~20 min)
  --quick:  3 rounds x 1.5 s, the same sizes with shorter idle windows (~5 min)
  --only:   comma-separated subset of: requests,sse,swarm,sqlite (default: all)
env: CARGO_TARGET_DIR (default <repo>/target); BENCH_NO_BUILD=1 reuses the
     binaries already built there; BENCH_CACHE (default ~/.cache/mcp-tunnel-bench)
     holds the peers.
EOF
}

MODE=full ROUNDS=5 DURATION=8 WARMUP=1 BULK_DURATION=3 IDLE_SECS=10 SQLITE_SECONDS=3
ONLY=requests,sse,swarm,sqlite
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ROUNDS=3 DURATION=1.5 WARMUP=0.3 BULK_DURATION=1 IDLE_SECS=4 SQLITE_SECONDS=1 ;;
        --only)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            ONLY=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
for g in ${ONLY//,/ }; do
    case "$g" in requests | sse | swarm | sqlite) ;; *) echo "unknown group in --only: $g" >&2; exit 2 ;; esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

BULK_BYTES=$((64 * 1024 * 1024))
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release"
RESULTS="$HERE/results"
TUNNEL=bench
STARTED=$SECONDS

# Settings from the caller's environment must not change what is measured.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^MCP_(RELAY|AGENT)_' || true)
export RUST_LOG=warn

log() { printf '==> [%4ds] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }

# 10,000 SSE streams and 10,000 agents need far more than the usual 1,024
# descriptors (each SSE stream is a client socket, a relay socket, an agent
# socket and an upstream socket).
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 24000 ]; then
    log "the open-file hard limit is $hard; 10,000-stream scenarios need ~24,000 (raise it, e.g. LimitNOFILE / ulimit -Hn)"
fi
ulimit -n "$hard" 2>/dev/null || true

# shellcheck source=bench/peers.sh
source "$HERE/peers.sh"
log "peers: rathole, bore, mcp-server-sqlite (installed once into $PEERS_CACHE)"
peers_install

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    log "BENCH_NO_BUILD=1: using the binaries in $BIN"
else
    log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --quiet -p mcp-relay -p mcp-agent -p mcp-tunnel-bench)
fi
for b in mcp-relay mcp-agent bench-upstream loadgen bench-report sse-bench swarm-bench sqlite-bench; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b (build it, or drop BENCH_NO_BUILD)"; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-bench.XXXXXX")"
PIDS=()

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_all
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

# start_tunnel NAME RELAY-ARGS...: a dev relay with its state in $WORK/NAME
# and one agent serving the upstream as tunnel $TUNNEL.
start_tunnel() {
    local name=$1 state="$WORK/$1"
    shift
    mkdir -p "$state" "$WORK/xdg-config"
    XDG_CONFIG_HOME="$WORK/xdg-config" "$BIN/mcp-relay" serve --dev --state "$state" \
        --https 127.0.0.1:0 --quic 127.0.0.1:0 --http 127.0.0.1:0 "$@" >"$WORK/$name-relay.log" 2>&1 &
    PIDS+=($!)
    wait_for "mcp-relay ($name)" "$!" test -s "$state/endpoints.json"
    local token
    token="$(XDG_CONFIG_HOME="$WORK/xdg-config" "$BIN/mcp-relay" agent-tokens create --state "$state" --label bench 2>>"$WORK/$name-relay.log")"
    mkdir -p -m 700 "$WORK/$name-run"
    MCP_AGENT_RUNTIME_DIR="$WORK/$name-run" MCP_AGENT_TOKEN="$token" XDG_CONFIG_HOME="$WORK/xdg-config" \
        MCP_AGENT_LOG_DIR="$WORK/$name-agent-logs" \
        "$BIN/mcp-agent" connect --relay "$(json_str public_url "$state/endpoints.json")" \
        --ca "$state/dev-ca.pem" --name "$TUNNEL" --upstream "http://$UPSTREAM/mcp" --quiet \
        >"$WORK/$name-agent.out" 2>"$WORK/$name-agent.log" &
    PIDS+=($!)
    wait_for "mcp-agent ($name)" "$!" grep -q "Public MCP URL" "$WORK/$name-agent.out"
}

ROUNDS_FILE="$WORK/rounds.jsonl"
: >"$ROUNDS_FILE"
EXTRA_ARGS=()

if want requests; then
    log "starting bench-upstream, our two relays, rathole (tcp, noise) and bore"
    "$BIN/bench-upstream" --listen 127.0.0.1:0 >"$WORK/upstream.addr" 2>"$WORK/upstream.log" &
    PIDS+=($!)
    wait_for "bench-upstream" "$!" test -s "$WORK/upstream.addr"
    UPSTREAM="$(head -n 1 "$WORK/upstream.addr")"

    # Ours, auth off, plain-HTTP front.
    start_tunnel open --no-auth
    # Ours as deployed: OAuth bearer token checked on every request, the
    # identity assertion signed for and verified by the agent, Cedar policy
    # decided at the relay and again at the agent, audit records written on
    # both sides. Rate limits off: one identity drives all the load.
    printf '[rate_limits]\nper_identity = 0\nper_tool = 0\n' >"$WORK/auth.toml"
    start_tunnel auth --config "$WORK/auth.toml"
    XDG_CONFIG_HOME="$WORK/xdg-config" "$BIN/mcp-relay" users add bench@example.com --state "$WORK/auth" >/dev/null 2>>"$WORK/auth-relay.log"
    BEARER="$(XDG_CONFIG_HOME="$WORK/xdg-config" "$BIN/mcp-relay" tokens issue --user bench@example.com \
        --tunnel "$TUNNEL" --ttl 2h --state "$WORK/auth" 2>>"$WORK/auth-relay.log")"

    declare -A URL=(
        [direct]="http://$UPSTREAM/mcp"
        [tunnel-http]="http://$(json_str http "$WORK/open/endpoints.json")/t/$TUNNEL/mcp"
        [tunnel-https-auth]="$(json_str public_url "$WORK/auth/endpoints.json")/t/$TUNNEL/mcp"
    )
    peers_start_rathole tcp "$UPSTREAM" "$WORK"
    URL[rathole-tcp]=$PEER_URL
    peers_start_rathole noise "$UPSTREAM" "$WORK"
    URL[rathole-noise]=$PEER_URL
    peers_start_bore "$UPSTREAM" "$WORK"
    URL[bore]=$PEER_URL
    for c in direct rathole-tcp rathole-noise bore tunnel-http tunnel-https-auth; do
        log "  $c: ${URL[$c]}"
    done

    # measure SCENARIO CONTENDER ROUND LOADGEN-ARGS...
    measure() {
        local scenario=$1 who=$2 round=$3 line
        shift 3
        local args=("$@")
        case "$who" in
            tcp) args+=(--tcp-rtt) ;;
            tunnel-https-auth) args+=(--url "${URL[$who]}" --ca "$WORK/auth/dev-ca.pem") ;;
            *) args+=(--url "${URL[$who]}") ;;
        esac
        # In the background so Ctrl-C/TERM reach the trap at once.
        if [ "$who" = tunnel-https-auth ]; then
            LOADGEN_BEARER="$BEARER" "$BIN/loadgen" "${args[@]}" >"$WORK/loadgen.out" 2>>"$WORK/loadgen.log" &
        else
            "$BIN/loadgen" "${args[@]}" >"$WORK/loadgen.out" 2>>"$WORK/loadgen.log" &
        fi
        local pid=$!
        if ! wait "$pid"; then
            log "loadgen failed: $scenario $who round $round"
            return 1
        fi
        line="$(head -n 1 "$WORK/loadgen.out")"
        printf '{"scenario":"%s","contender":"%s","round":%d,"result":%s}\n' \
            "$scenario" "$who" "$round" "$line" >>"$ROUNDS_FILE"
        printf '    %-5s %d/%d %-18s %s\n' "$scenario" "$round" "$ROUNDS" "$who" "$line" >&2
    }

    CONTENDERS=(direct rathole-tcp rathole-noise bore tunnel-http tunnel-https-auth)
    log "request scenarios ($MODE: $ROUNDS rounds x ${DURATION} s, warm-up ${WARMUP} s; contenders alternated)"
    for spec in c1:1 c64:64 c256:256; do
        scenario=${spec%%:*} conc=${spec##*:}
        extra=()
        [ "$conc" -le 64 ] && extra=(tcp)
        for round in $(seq "$ROUNDS"); do
            for who in "${CONTENDERS[@]}" "${extra[@]}"; do
                measure "$scenario" "$who" "$round" -c "$conc" -d "$DURATION" --warmup "$WARMUP"
            done
        done
    done
    log "bulk: one stream of $((BULK_BYTES >> 20)) MiB responses, ${BULK_DURATION} s per contender and round"
    for round in $(seq "$ROUNDS"); do
        for who in "${CONTENDERS[@]}" tcp; do
            measure bulk "$who" "$round" --bulk "$BULK_BYTES" -c 1 -d "$BULK_DURATION" --warmup 0.2
        done
    done
    # The other scenarios want the machine to themselves.
    stop_all
fi

# program NAME JSON-FLAG ARGS...: runs one scenario program in the
# background (so Ctrl-C reaches the trap), shows the end of its summary, and
# hands its JSON to bench-report with JSON-FLAG.
program() {
    local name=$1 flag=$2
    shift 2
    "$BIN/$name" "$@" --json "$WORK/$name.json" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    PIDS+=($!)
    wait "$!" || { log "$name failed"; tail -n 30 "$WORK/$name.log" >&2; exit 1; }
    grep -v '^\s*$' "$WORK/$name.log" | tail -n 8 | sed 's/^/    /' >&2
    EXTRA_ARGS+=("$flag" "$WORK/$name.json")
}

if want sse; then
    log "SSE fan-out: 1,000 and 10,000 streams through one tunnel"
    program sse-bench --sse --relay-bin "$BIN/mcp-relay" --agent-bin "$BIN/mcp-agent" \
        --streams 1000,10000
fi
if want swarm; then
    log "idle agents (1,000 and 10,000) and a relay restart under 1,000 agents"
    program swarm-bench --swarm --relay-bin "$BIN/mcp-relay" --agents 1000,10000 \
        --reconnect-agents 1000 --idle-secs "$IDLE_SECS"
fi
if want sqlite; then
    log "SQLite tool: ours vs mcp-server-sqlite, $ROUNDS rounds"
    program sqlite-bench --sqlite --agent "$BIN/mcp-agent" --reference "$(peers_reference_sqlite)" \
        --rounds "$ROUNDS" --seconds "$SQLITE_SECONDS"
fi

echo >&2
mkdir -p "$RESULTS"
"$BIN/bench-report" --rounds "$ROUNDS_FILE" --out "$RESULTS/latest.json" --mode "$MODE" \
    --rounds-per-contender "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --bulk-bytes "$BULK_BYTES" "${EXTRA_ARGS[@]}"
if "$(peers_python)" "$HERE/chart.py" "$RESULTS/latest.json" "$RESULTS/latest.png" 2>"$WORK/chart.log"; then
    log "wrote ${RESULTS#"$ROOT"/}/latest.json and latest.png in $((SECONDS - STARTED)) s"
else
    log "wrote ${RESULTS#"$ROOT"/}/latest.json; the chart failed: $(tail -n 1 "$WORK/chart.log")"
fi
