#!/usr/bin/env bash
# bench/handshake.sh [--quick]
#
# What it costs to bring a tunnel up, device certificate (mutual TLS over
# QUIC, from `mcp-agent login`) side by side with an agent token (--token, the
# --dev path), against one dev relay:
#
#  1. Time to a working tunnel: from spawning `mcp-agent connect` until
#     (a) it prints "Public MCP URL:" and (b) the first MCP request (an
#     `initialize` POST through the relay's plain-HTTP front, sent with curl
#     as soon as the URL line is read) is answered 200. (b) is (a) plus
#     curl's own time for the request (%{time_total}): a client that is
#     already running, not curl's process start. N runs per credential,
#     alternated (device token token device ...) after one warm-up each;
#     median (p50) and p90.
#  2. Relay CPU per agent connection: M agents connect one after another
#     (start, wait for the URL line, SIGTERM, wait for the exit). The relay's
#     utime+stime from /proc/<pid>/stat (clock ticks) before and after, divided
#     by M. Done in rounds that rotate the order of the credentials.
#
# Load generator for (2): real `mcp-agent connect` processes, not a custom
# QUIC client. So each connection is what a (re)connecting agent costs the
# relay: the discovery GET /.well-known/mcp-relay over HTTPS (a TLS handshake
# on the HTTPS front), the QUIC handshake (mutual TLS with a device
# certificate), Hello/Welcome (device: certificate checks against the store,
# DeviceUpdate), the first heartbeat, GoAway and close. Only the relay's CPU is
# counted; the agent processes' start-up is not. The discovery GET alone
# (curl, a new TLS connection each) is measured in the same rounds, so the
# QUIC connection's share is the difference.
#
# Builds mcp-relay and mcp-agent (release) unless BENCH_NO_BUILD=1, runs
# everything on 127.0.0.1 in a temp dir, stops every process it started on
# exit or Ctrl-C. Needs bash >= 5.1 and curl. Writes $CARGO_TARGET_DIR/bench/handshake.json.
# See bench/README.md.
set -euo pipefail

usage() {
    echo "usage: bench/handshake.sh [--quick]"
    echo "  full:    20 runs and 200 relay connections per credential (~1.5 min once built)"
    echo "  --quick:  8 runs and  50 relay connections per credential (~30 s)"
    echo "env: CARGO_TARGET_DIR (default <repo>/target); BENCH_NO_BUILD=1 reuses the binaries already built there"
}

MODE=full RUNS=20 HANDSHAKES=200 CPU_ROUNDS=4
case "${1:-}" in
    "") ;;
    --quick) MODE=quick RUNS=8 HANDSHAKES=50 CPU_ROUNDS=2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac
PER_ROUND=$((HANDSHAKES / CPU_ROUNDS))
TARGET_MS=300          # time to a working tunnel, device certificate, p50
URL_TIMEOUT=20         # s an agent may take to print its URL
STOP_TIMEOUT=15        # s an agent may take to exit after SIGTERM (it drains up to 10 s)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release"
OUT="$CARGO_TARGET_DIR/bench/handshake.json"

# Settings from the caller's environment must not change what is measured.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^MCP_(RELAY|AGENT)_' || true)
unset RUST_LOG

log() { printf '==> %s\n' "$*" >&2; }

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
    log "needs bash >= 5.1 (EPOCHREALTIME, wait -n -p); this is $BASH_VERSION"
    exit 1
fi
command -v curl >/dev/null || { log "curl is needed for the first MCP request"; exit 1; }
if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    log "BENCH_NO_BUILD=1: using the binaries in $BIN"
else
    log "building release binaries: mcp-relay, mcp-agent (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --quiet -p mcp-relay -p mcp-agent)
fi
for b in mcp-relay mcp-agent; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b (build it, or drop BENCH_NO_BUILD)"; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-handshake.XXXXXX")"
PIDS=()        # long-lived: the relay
AGENT_PID=""   # the one agent running at a time
TIMER_PID=""   # the SIGKILL timer while it stops

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    exec 3<&- 2>/dev/null || true
    for pid in $AGENT_PID $TIMER_PID; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}" $AGENT_PID $TIMER_PID; do wait "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ]; then
        for f in "$WORK"/*.log "$WORK"/*.err; do
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

now_us() { echo "${EPOCHREALTIME/./}"; }

# json_str KEY FILE: the string value of "KEY" in a flat JSON object.
json_str() {
    grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$2" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/'
}

# relay_ticks: the relay's utime+stime in clock ticks (all threads).
relay_ticks() {
    local stat
    stat="$(<"/proc/$RELAY_PID/stat")"
    stat="${stat##*) }" # fields from 3 (state) on; comm may hold spaces
    # shellcheck disable=SC2086 # split the fields on purpose
    set -- $stat
    echo $((${12} + ${13}))
}

# ---------------------------------------------------------------- set-up
log "starting mcp-relay (dev)"
STATE="$WORK/relay-state"
mkdir -p "$WORK/xdg-config"
export XDG_CONFIG_HOME="$WORK/xdg-config"
RUST_LOG=info "$BIN/mcp-relay" serve --dev --state "$STATE" \
    --https 127.0.0.1:0 --quic 127.0.0.1:0 --http 127.0.0.1:0 >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
for _ in $(seq 200); do
    [ -s "$STATE/endpoints.json" ] && break
    kill -0 "$RELAY_PID" 2>/dev/null || { log "mcp-relay exited"; exit 1; }
    sleep 0.1
done
[ -s "$STATE/endpoints.json" ] || { log "mcp-relay: no endpoints.json after 20 s"; exit 1; }
PUBLIC_URL="$(json_str public_url "$STATE/endpoints.json")"
RELAY_HTTP="$(json_str http "$STATE/endpoints.json")"
CA="$STATE/dev-ca.pem"

relay() { "$BIN/mcp-relay" "$@" --state "$STATE" 2>>"$WORK/relay-cli.log"; }

USER_EMAIL=bench@example.com
DEVICE_TUNNEL=hs-device TOKEN_TUNNEL=hs-token
DEVICE_HOME="$WORK/device-config" TOKEN_HOME="$WORK/token-config"
mkdir -p -m 700 "$DEVICE_HOME" "$TOKEN_HOME" "$WORK/device-run" "$WORK/token-run"
DB="$WORK/shop.db"
"$BIN/mcp-agent" demo-db "$DB" 2>>"$WORK/setup.log"

log "device agent: mcp-agent login --enroll-token (device certificate)"
relay users add "$USER_EMAIL" >/dev/null
ENROLL="$(relay enroll-tokens create --user "$USER_EMAIL")"
MCP_AGENT_CONFIG_DIR="$DEVICE_HOME" MCP_AGENT_CREDENTIAL_STORE=file MCP_AGENT_ENROLL_TOKEN="$ENROLL" \
    "$BIN/mcp-agent" login --relay "$PUBLIC_URL" --ca "$CA" --label bench 2>>"$WORK/setup.log"
unset ENROLL
AGENT_TOKEN="$(relay agent-tokens create --label bench)"

# Bearer tokens for the first request, in header files (not on curl's command line).
for t in "$DEVICE_TUNNEL" "$TOKEN_TUNNEL"; do
    printf 'Authorization: Bearer %s\n' "$(relay tokens issue --user "$USER_EMAIL" --tunnel "$t" --ttl 1h)" \
        >"$WORK/$t.hdr"
done
INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench-handshake","version":"1"}}}'

# ---------------------------------------------------------------- one agent
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(now_us)" "$line"; done; }

# start_agent KIND STDERR-MODE: spawns `mcp-agent connect` with its stdout on
# a FIFO read through fd 3; STDERR-MODE "stamp" timestamps each stderr line
# into $WORK/agent.err, "log" appends them to $WORK/agent.log.
start_agent() {
    local kind=$1 mode=$2 fifo="$WORK/agent.out"
    rm -f "$fifo" "$WORK/agent.err"
    mkfifo "$fifo"
    local -a vars args
    if [ "$kind" = device ]; then
        vars=(MCP_AGENT_CONFIG_DIR="$DEVICE_HOME" MCP_AGENT_RUNTIME_DIR="$WORK/device-run")
        args=(connect --db "$DB" --name "$DEVICE_TUNNEL" --quiet) # relay + CA remembered from login
    else
        vars=(MCP_AGENT_CONFIG_DIR="$TOKEN_HOME" MCP_AGENT_RUNTIME_DIR="$WORK/token-run" MCP_AGENT_TOKEN="$AGENT_TOKEN")
        args=(connect --relay "$PUBLIC_URL" --ca "$CA" --db "$DB" --name "$TOKEN_TUNNEL" --quiet)
    fi
    if [ "$mode" = stamp ]; then
        env MCP_AGENT_CREDENTIAL_STORE=file "${vars[@]}" "$BIN/mcp-agent" "${args[@]}" \
            >"$fifo" 2> >(stamp >"$WORK/agent.err") &
    else
        env MCP_AGENT_CREDENTIAL_STORE=file "${vars[@]}" "$BIN/mcp-agent" "${args[@]}" \
            >"$fifo" 2>>"$WORK/agent.log" &
    fi
    AGENT_PID=$!
    exec 3<"$fifo"
}

# wait_url: reads the agent's stdout until "Public MCP URL:"; 1 on exit or timeout.
wait_url() {
    local line
    while IFS= read -r -t "$URL_TIMEOUT" line <&3; do
        case $line in "Public MCP URL: "*) return 0 ;; esac
    done
    log "the agent printed no URL (it exited, or took over ${URL_TIMEOUT} s)"
    return 1
}

# stop_agent: SIGTERM, wait (SIGKILL after STOP_TIMEOUT s), close its stdout.
stop_agent() {
    local first=""
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    sleep "$STOP_TIMEOUT" &
    TIMER_PID=$!
    wait -n -p first "$AGENT_PID" "$TIMER_PID" 2>/dev/null || true
    if [ "$first" = "$TIMER_PID" ]; then
        log "the agent did not exit within ${STOP_TIMEOUT} s of SIGTERM; killing it"
        kill -KILL "$AGENT_PID" 2>/dev/null || true
    else
        kill "$TIMER_PID" 2>/dev/null || true
    fi
    wait "$AGENT_PID" "$TIMER_PID" 2>/dev/null || true
    AGENT_PID="" TIMER_PID=""
    exec 3<&-
}

# first_request TUNNEL: POSTs `initialize` until it is answered 200 with a
# JSON-RPC result (at most 100 tries, 10 ms apart); prints "RETRIES CURL_MS".
first_request() {
    local tunnel=$1 tries=0 out code secs
    while :; do
        out="$(curl -sS --max-time 10 -o "$WORK/response" -w '%{http_code} %{time_total}' \
            -X POST "http://$RELAY_HTTP/t/$tunnel/mcp" -H "@$WORK/$tunnel.hdr" \
            -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
            --data "$INIT" 2>>"$WORK/curl.log" || true)"
        code=${out%% *} secs=${out##* }
        if [ "$code" = 200 ] && grep -q '"result"' "$WORK/response"; then
            awk -v r="$tries" -v s="$secs" 'BEGIN { printf "%d %.3f\n", r, s * 1000 }'
            return 0
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 100 ]; then
            log "first request to $tunnel: no 200 after 100 tries (last: ${out:-no answer})"
            return 1
        fi
        sleep 0.01
    done
}

# time_run KIND: one measured run; sets
# RESULT="STARTUP_MS URL_MS FIRST_REQUEST_MS REQUEST_MS RETRIES WALL_MS", where
# FIRST_REQUEST = URL + REQUEST (curl's time_total) and WALL is spawn -> curl
# exited (with curl's process start and the retries, if any).
# (Not in a $(subshell): the EXIT trap must see AGENT_PID.)
time_run() {
    local kind=$1 tunnel t0 t_url t_req req started
    [ "$kind" = device ] && tunnel=$DEVICE_TUNNEL || tunnel=$TOKEN_TUNNEL
    t0=$(now_us)
    start_agent "$kind" stamp
    wait_url
    t_url=$(now_us)
    req="$(first_request "$tunnel")"
    t_req=$(now_us)
    stop_agent
    # The stderr stamper may lag the agent's exit by a moment.
    for _ in $(seq 100); do
        grep -q ' connecting to ' "$WORK/agent.err" 2>/dev/null && break
        sleep 0.01
    done
    started="$(awk '/ connecting to / { print $1; exit }' "$WORK/agent.err" 2>/dev/null || true)"
    cat "$WORK/agent.err" >>"$WORK/agent.log" 2>/dev/null || true
    RESULT="$(awk -v t0="$t0" -v s="${started:-$t0}" -v u="$t_url" -v q="$t_req" -v req="$req" 'BEGIN {
        split(req, r, " ")
        printf "%.3f %.3f %.3f %.3f %d %.3f\n", (s - t0) / 1000, (u - t0) / 1000, (u - t0) / 1000 + r[2], r[2], r[1], (q - t0) / 1000
    }')"
}

# ---------------------------------------------------------------- 1. time to a working tunnel
log "time to a working tunnel: $RUNS runs per credential, alternated, after one warm-up each"
time_run device
time_run token
: >"$WORK/device.runs"
: >"$WORK/token.runs"
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then order="device token"; else order="token device"; fi
    for kind in $order; do
        time_run "$kind"
        echo "$RESULT" >>"$WORK/$kind.runs"
        read -r s u q r x w <<<"$RESULT"
        printf '    run %2d/%d  %-6s  start-up %6.1f ms  URL %6.1f ms  first request %6.1f ms (request %5.1f ms, %d retries; with curl start %6.1f ms)\n' \
            "$i" "$RUNS" "$kind" "$s" "$u" "$q" "$r" "$x" "$w" >&2
    done
done

# ---------------------------------------------------------------- 2. relay CPU per connection
# discovery_get: GET /.well-known/mcp-relay over HTTPS on a new TLS
# connection, as an agent does before each QUIC connection.
discovery_get() {
    local code
    code="$(curl -sS --max-time 10 --cacert "$CA" --resolve "localhost:${PUBLIC_URL##*:}:127.0.0.1" \
        -o /dev/null -w '%{http_code}' "$PUBLIC_URL/.well-known/mcp-relay" 2>>"$WORK/curl.log" || true)"
    [ "$code" = 200 ] || { log "GET /.well-known/mcp-relay answered ${code:-nothing}"; return 1; }
}

# cpu_round KIND COUNT ROUND: COUNT agent connections (or discovery GETs) one
# after another; appends "COUNT TICKS WALL_MS" to $WORK/KIND.cpu.
cpu_round() {
    local kind=$1 count=$2 round=$3 before t0 ticks wall_ms
    before=$(relay_ticks)
    t0=$(now_us)
    for _ in $(seq "$count"); do
        if [ "$kind" = discovery ]; then
            discovery_get
        else
            start_agent "$kind" log
            wait_url
            stop_agent
        fi
    done
    ticks=$(($(relay_ticks) - before))
    wall_ms=$((($(now_us) - t0) / 1000))
    echo "$count $ticks $wall_ms" >>"$WORK/$kind.cpu"
    awk -v k="$kind" -v r="$round" -v n="$CPU_ROUNDS" -v c="$count" -v t="$ticks" -v hz="$CLK_TCK" -v w="$wall_ms" 'BEGIN {
        printf "    round %d/%d  %-9s  %4d in %5.1f s: %3d ticks = %.2f ms relay CPU each\n", r, n, k, c, w / 1000, t, t * 1000 / hz / c
    }' >&2
}

CLK_TCK="$(getconf CLK_TCK)"
IDLE_S=3
a=$(relay_ticks)
sleep "$IDLE_S"
IDLE_TICKS=$(($(relay_ticks) - a))
DISCOVERY_PER_ROUND=$((4 * PER_ROUND)) # cheap, and small: more of them for the tick resolution
log "relay CPU: $HANDSHAKES agent connections per credential, and $((CPU_ROUNDS * DISCOVERY_PER_ROUND)) discovery GETs alone, in $CPU_ROUNDS rounds (order rotated; relay idle: $IDLE_TICKS ticks in ${IDLE_S} s)"
: >"$WORK/device.cpu"
: >"$WORK/token.cpu"
: >"$WORK/discovery.cpu"
KINDS=(device token discovery)
for round in $(seq "$CPU_ROUNDS"); do
    for j in 0 1 2; do
        kind=${KINDS[$(((round - 1 + j) % 3))]}
        if [ "$kind" = discovery ]; then n=$DISCOVERY_PER_ROUND; else n=$PER_ROUND; fi
        cpu_round "$kind" "$n" "$round"
    done
done

# ---------------------------------------------------------------- report
MACHINE_CPU="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
MACHINE="$(nproc) cores, ${MACHINE_CPU:-unknown CPU}, Linux $(uname -r)"
mkdir -p "$(dirname "$OUT")"
awk -v mode="$MODE" -v runs="$RUNS" -v hs="$HANDSHAKES" -v rounds="$CPU_ROUNDS" -v hz="$CLK_TCK" \
    -v idle_ticks="$IDLE_TICKS" -v idle_s="$IDLE_S" -v target="$TARGET_MS" -v machine="$MACHINE" \
    -v nproc="$(nproc)" -v cpu="${MACHINE_CPU:-unknown}" -v kernel="$(uname -r)" -v out="$OUT" '
function sort_(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
}
# median: mean of the two middle values when n is even; p90: nearest rank.
function median(a, n) { return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function p90(a, n,   k) { k = int(0.9 * n); if (k < 0.9 * n) k++; return a[k] }
function list(a, n,   i, s) { s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? "," : "") sprintf("%.3f", a[i]); return "[" s "]" }
# json_dist sorts a in place (median/p90 read it afterwards); "runs" keeps the run order.
function json_dist(a, n,   raw, i) {
    for (i = 1; i <= n; i++) raw[i] = a[i]
    sort_(a, n)
    return sprintf("{\"p50\":%.3f,\"p90\":%.3f,\"runs\":%s}", median(a, n), p90(a, n), list(raw, n))
}
function row(label, stat, v) {
    printf "%-39s %-4s %12.1f %12.1f %12.2fx\n", label, stat, v["device"], v["token"], v["device"] / v["token"]
}
function row2(label, stat, v) {
    printf "%-39s %-4s %12.2f %12.2f %12.2fx\n", label, stat, v["device"], v["token"], v["device"] / v["token"]
}
FNR == 1 { f++ }
f <= 2 {  # KIND.runs: startup url first_request request retries wall
    k = f == 1 ? "device" : "token"; n[k]++
    st[k, n[k]] = $1; ur[k, n[k]] = $2; fr[k, n[k]] = $3; rq[k, n[k]] = $4; re[k] += $5; wa[k, n[k]] = $6
}
f >= 3 {  # KIND.cpu: count ticks wall_ms
    k = f == 3 ? "device" : f == 4 ? "token" : "discovery"; nc[k]++
    cnt[k] += $1; ticks[k] += $2
    cr[k] = cr[k] (nc[k] > 1 ? "," : "") sprintf("{\"count\":%d,\"ticks\":%d,\"wall_ms\":%d}", $1, $2, $3)
}
END {
    D = ticks["discovery"] * 1000 / hz / cnt["discovery"]
    for (kk = 1; kk <= 2; kk++) {
        k = kk == 1 ? "device" : "token"
        for (i = 1; i <= n[k]; i++) { a1[i] = st[k, i]; a2[i] = ur[k, i]; a3[i] = fr[k, i]; a4[i] = rq[k, i]; a5[i] = wa[k, i] }
        js[k] = sprintf("{\"startup_ms\":%s,\"time_to_url_ms\":%s,\"time_to_first_request_ms\":%s,\"request_ms\":%s,\"first_request_wall_ms\":%s,\"request_retries\":%d,",
            json_dist(a1, n[k]), json_dist(a2, n[k]), json_dist(a3, n[k]), json_dist(a4, n[k]), json_dist(a5, n[k]), re[k])
        S50[k] = median(a1, n[k]); U50[k] = median(a2, n[k]); U90[k] = p90(a2, n[k])
        F50[k] = median(a3, n[k]); F90[k] = p90(a3, n[k]); R50[k] = median(a4, n[k])
        C[k] = ticks[k] * 1000 / hz / cnt[k]; Q[k] = C[k] - D
        js[k] = js[k] sprintf("\"relay_cpu_ms_per_connection\":%.3f,\"relay_cpu_ms_per_connection_less_discovery\":%.3f,\"relay_cpu_rounds\":[%s]}", C[k], Q[k], cr[k])
    }
    idle = idle_ticks * 1000 / hz / idle_s
    verdict = F50["device"] <= target ? "PASS" : "MISS"

    printf "handshake: device certificate (mutual TLS) vs agent token, %s run: %d runs, %d relay connections per credential\n", mode, runs, hs
    printf "machine: %s\n\n", machine
    printf "%-44s %12s %12s %13s\n", "", "device cert", "token", "device/token"
    row("start-up: spawn -> \"connecting to\" (ms)", "p50", S50)
    row("time to URL (ms)", "p50", U50); row("", "p90", U90)
    row("time to first request (ms)", "p50", F50); row("", "p90", F90)
    row("  of which the request itself (ms)", "p50", R50)
    row2("relay CPU per agent connection (ms)", "mean", C)
    row2("  less the discovery GET (ms)", "mean", Q)
    if (re["device"] + re["token"] > 0) printf "first requests retried (tunnel not ready at the URL line): device %d, token %d\n", re["device"], re["token"]
    printf "\ntarget: time to first request <= %d ms (device cert, p50): %s  (p50 %.1f ms = %.0f%% of the target, p90 %.1f ms)\n", target, verdict, F50["device"], 100 * F50["device"] / target, F90["device"]
    printf "discovery GET alone (HTTPS, new TLS connection, curl): %.2f ms relay CPU each, over %d GETs\n", D, cnt["discovery"]
    printf "relay CPU resolution: 1 tick = %.0f ms per round (%d device, %d token, %d discovery ticks in all); relay idle: %.2f ms CPU per s (not subtracted)\n", 1000 / hz, ticks["device"], ticks["token"], ticks["discovery"], idle

    printf "{\"machine\":{\"nproc\":%d,\"cpu\":\"%s\",\"kernel\":\"%s\"},", nproc, cpu, kernel > out
    printf "\"run\":{\"mode\":\"%s\",\"runs\":%d,\"connections\":%d,\"cpu_rounds\":%d,\"clk_tck\":%d,\"relay_idle_cpu_ms_per_s\":%.3f},", mode, runs, hs, rounds, hz, idle > out
    printf "\"device\":%s,\"token\":%s,", js["device"], js["token"] > out
    printf "\"discovery\":{\"relay_cpu_ms_per_get\":%.3f,\"relay_cpu_rounds\":[%s]},", D, cr["discovery"] > out
    printf "\"ratio_device_over_token\":{\"time_to_url_p50\":%.3f,\"time_to_first_request_p50\":%.3f,\"relay_cpu_per_connection\":%.3f,\"relay_cpu_per_connection_less_discovery\":%.3f},", U50["device"] / U50["token"], F50["device"] / F50["token"], C["device"] / C["token"], Q["device"] / Q["token"] > out
    printf "\"target\":{\"time_to_first_request_p50_ms\":%d,\"device_p50_ms\":%.3f,\"verdict\":\"%s\"}}\n", target, F50["device"], verdict > out
}
' "$WORK/device.runs" "$WORK/token.runs" "$WORK/device.cpu" "$WORK/token.cpu" "$WORK/discovery.cpu"
log "wrote ${OUT#"$ROOT"/}"
