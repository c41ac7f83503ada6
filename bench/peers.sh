#!/usr/bin/env bash
# bench/peers.sh — the peer tools the benchmark compares the tunnel with.
#
# A bash library, meant to be sourced by bench/run.sh:
#
#   source bench/peers.sh
#   peers_install                                  # idempotent; one line per item
#   peers_start_rathole tcp|noise UPSTREAM WORKDIR # sets PEER_ADDR, PEER_URL
#   peers_start_bore UPSTREAM WORKDIR              # sets PEER_ADDR, PEER_URL
#   peers_reference_sqlite                         # prints the mcp-server-sqlite path
#   peers_python                                   # prints the venv's python (matplotlib)
#
# UPSTREAM is the host:port of an HTTP MCP endpoint serving POST /mcp. The
# start functions put every process on 127.0.0.1 (ports the OS picks), append
# their PIDs to the caller's PIDS array (the caller kills them), write logs to
# WORKDIR/<peer>-*.log and return only once a POST through the public port is
# answered 200 by the upstream (20 s timeout, then the logs are shown).
#
# Everything is installed from the package registries into a cache dir,
# ${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-tunnel-bench}:
#   rathole/bin/rathole    crates.io rathole 0.5.0, features server,client,noise
#                          (no tls/websocket: those pull native-tls/OpenSSL).
#                          Not --locked: its lock file pins time 0.3.29, which
#                          current rustc rejects (E0282).
#   bore/bin/bore          crates.io bore-cli 0.6.0 (--locked)
#   venv-bench/            PyPI mcp-server-sqlite 2025.4.25 with mcp<2, matplotlib
#   cargo-target/          cargo install's build dir (keeps the workspace target clean)
#
# Run directly: `bench/peers.sh install` installs everything and prints the paths.

PEERS_CACHE="${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-tunnel-bench}"
PEERS_RATHOLE_VERSION=0.5.0
PEERS_RATHOLE_FEATURES=server,client,noise
PEERS_BORE_VERSION=0.6.0
PEERS_SQLITE_VERSION=2025.4.25
PEERS_MCP_SPEC='mcp<2'
PEERS_MATPLOTLIB_SPEC='matplotlib>=3.7,<4'
PEERS_RATHOLE="$PEERS_CACHE/rathole/bin/rathole"
PEERS_BORE="$PEERS_CACHE/bore/bin/bore"
PEERS_VENV="$PEERS_CACHE/venv-bench"
# bore's control port is a constant of the protocol (bore-cli 0.6: 7835).
PEERS_BORE_CONTROL_PORT=7835

_peers_say() { printf 'peers: %s\n' "$*" >&2; }

# _peers_timed NAME LOG CMD...: runs CMD with its output in LOG and reports
# how long it took; on failure shows the end of LOG.
_peers_timed() {
    local name=$1 log=$2 start=$SECONDS
    shift 2
    mkdir -p "$(dirname "$log")"
    if "$@" >"$log" 2>&1; then
        _peers_say "$name installed in $((SECONDS - start)) s"
    else
        _peers_say "$name: install failed after $((SECONDS - start)) s; last lines of $log:"
        tail -n 30 "$log" >&2
        return 1
    fi
}

# _peers_cargo_install ARGS...: cargo install in its own target dir (never
# touching or locking the workspace's), removed afterwards to give the disk back.
_peers_cargo_install() {
    local rc=0
    CARGO_TARGET_DIR="$PEERS_CACHE/cargo-target" cargo install --quiet "$@" || rc=$?
    rm -rf "$PEERS_CACHE/cargo-target"
    return "$rc"
}

_peers_rathole_ok() {
    # rathole 0.5.0's --version prints an empty short version, then a
    # "Build Version: 0.5.0" line.
    [ -x "$PEERS_RATHOLE" ] &&
        "$PEERS_RATHOLE" --version 2>/dev/null | grep -qF " $PEERS_RATHOLE_VERSION" &&
        "$PEERS_RATHOLE" --genkey >/dev/null 2>&1 # built with noise
}

_peers_bore_ok() {
    [ -x "$PEERS_BORE" ] && "$PEERS_BORE" --version 2>/dev/null | grep -qF " $PEERS_BORE_VERSION"
}

_peers_venv_ok() {
    [ -x "$PEERS_VENV/bin/mcp-server-sqlite" ] &&
        "$PEERS_VENV/bin/python" - "$PEERS_SQLITE_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import matplotlib  # noqa: F401
ok = version("mcp-server-sqlite") == sys.argv[1] and int(version("mcp").split(".")[0]) < 2
sys.exit(0 if ok else 1)
EOF
}

_peers_venv_install() {
    [ -x "$PEERS_VENV/bin/python" ] || python3 -m venv "$PEERS_VENV" || return 1
    "$PEERS_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "$PEERS_MCP_SPEC" "mcp-server-sqlite==$PEERS_SQLITE_VERSION" "$PEERS_MATPLOTLIB_SPEC"
}

# peers_install: installs whatever is missing (or at another version).
peers_install() {
    mkdir -p "$PEERS_CACHE/logs"
    command -v cargo >/dev/null || { _peers_say "cargo not found"; return 1; }
    command -v python3 >/dev/null || { _peers_say "python3 not found"; return 1; }

    if _peers_rathole_ok; then
        _peers_say "rathole $PEERS_RATHOLE_VERSION: $PEERS_RATHOLE"
    else
        _peers_say "installing rathole $PEERS_RATHOLE_VERSION ($PEERS_RATHOLE_FEATURES) with cargo install; takes minutes the first time"
        _peers_timed "rathole $PEERS_RATHOLE_VERSION" "$PEERS_CACHE/logs/rathole-install.log" \
            _peers_cargo_install rathole --version "=$PEERS_RATHOLE_VERSION" \
            --no-default-features --features "$PEERS_RATHOLE_FEATURES" \
            --root "$PEERS_CACHE/rathole" --force || return 1
        _peers_rathole_ok || { _peers_say "rathole: installed binary fails its check"; return 1; }
    fi

    if _peers_bore_ok; then
        _peers_say "bore-cli $PEERS_BORE_VERSION: $PEERS_BORE"
    else
        _peers_say "installing bore-cli $PEERS_BORE_VERSION with cargo install; takes minutes the first time"
        _peers_timed "bore-cli $PEERS_BORE_VERSION" "$PEERS_CACHE/logs/bore-install.log" \
            _peers_cargo_install --locked bore-cli --version "=$PEERS_BORE_VERSION" \
            --root "$PEERS_CACHE/bore" --force || return 1
        _peers_bore_ok || { _peers_say "bore: installed binary fails its check"; return 1; }
    fi

    if _peers_venv_ok; then
        _peers_say "mcp-server-sqlite $PEERS_SQLITE_VERSION + matplotlib: $PEERS_VENV"
    else
        _peers_say "installing mcp-server-sqlite $PEERS_SQLITE_VERSION ($PEERS_MCP_SPEC) and matplotlib into $PEERS_VENV"
        _peers_timed "python venv" "$PEERS_CACHE/logs/venv-install.log" _peers_venv_install || return 1
        _peers_venv_ok || { _peers_say "venv: installed packages fail their check"; return 1; }
    fi
}

# peers_reference_sqlite: prints the path of the reference mcp-server-sqlite.
peers_reference_sqlite() {
    [ -x "$PEERS_VENV/bin/mcp-server-sqlite" ] || { _peers_say "mcp-server-sqlite missing: run peers_install"; return 1; }
    printf '%s\n' "$PEERS_VENV/bin/mcp-server-sqlite"
}

# peers_python: prints the path of the venv's python (it has matplotlib, for chart.py).
peers_python() {
    [ -x "$PEERS_VENV/bin/python" ] || { _peers_say "$PEERS_VENV missing: run peers_install"; return 1; }
    printf '%s\n' "$PEERS_VENV/bin/python"
}

# _peers_free_ports N: prints N distinct free TCP ports on 127.0.0.1, one a line.
_peers_free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

# _peers_port_free HOST PORT: whether PORT can be bound on HOST.
_peers_port_free() {
    python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
EOF
}

# _peers_wait_listen HOST PORT PID: waits (up to 10 s, while PID lives) until
# something listens on HOST:PORT, without connecting to it (a probe
# connection makes the peers log errors). A failure shows up in
# _peers_wait_forward.
_peers_wait_listen() {
    for _ in $(seq 200); do
        _peers_port_free "$1" "$2" || return 0
        kill -0 "$3" 2>/dev/null || return 0
        sleep 0.05
    done
}

# _peers_wait_forward NAME ADDR "PID..." LOG...: polls POST http://ADDR/mcp
# until it is answered 200 (20 s), failing early if a process exits. On
# failure prints the logs.
_peers_wait_forward() {
    local name=$1 addr=$2 pids=$3 code pid log
    shift 3
    local body='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"probe"}}}'
    local deadline=$((SECONDS + 20))
    while [ "$SECONDS" -lt "$deadline" ]; do
        code="$(curl -s --noproxy '*' -m 2 -o /dev/null -w '%{http_code}' -X POST \
            -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
            -d "$body" "http://$addr/mcp" 2>/dev/null || true)"
        [ "$code" = 200 ] && return 0
        for pid in $pids; do
            if ! kill -0 "$pid" 2>/dev/null; then
                _peers_say "$name: process $pid exited before forwarding"
                _peers_show_logs "$@"
                return 1
            fi
        done
        sleep 0.1
    done
    _peers_say "$name: http://$addr/mcp not forwarding after 20 s (last HTTP status: ${code:-none})"
    _peers_show_logs "$@"
    return 1
}

_peers_show_logs() {
    local log
    for log in "$@"; do
        echo "--- last lines of $log" >&2
        tail -n 20 "$log" 2>/dev/null | sed $'s/\x1b\[[0-9;]*m//g' >&2 || true
    done
}

# peers_start_rathole MODE UPSTREAM_ADDR WORKDIR
#   MODE: tcp | noise (Noise_NK_25519_ChaChaPoly_BLAKE2s, rathole's default).
#   Starts a rathole server and client forwarding the service "bench" to
#   UPSTREAM_ADDR. Sets PEER_ADDR (public host:port) and PEER_URL
#   (http://PEER_ADDR/mcp); appends both PIDs to PIDS.
peers_start_rathole() {
    local mode=$1 upstream=$2 work=$3
    case "$mode" in tcp | noise) ;; *) _peers_say "rathole mode must be tcp or noise, not '$mode'"; return 1 ;; esac
    [ -x "$PEERS_RATHOLE" ] || { _peers_say "rathole missing: run peers_install"; return 1; }
    local dir="$work/rathole-$mode" ports control public token keys priv pub
    mkdir -p "$dir"
    ports="$(_peers_free_ports 2)" || return 1
    control="$(sed -n 1p <<<"$ports")"
    public="$(sed -n 2p <<<"$ports")"
    token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

    local server_transport="" client_transport=""
    if [ "$mode" = noise ]; then
        keys="$("$PEERS_RATHOLE" --genkey)" || return 1
        priv="$(awk '/^Private Key:/ { getline; print; exit }' <<<"$keys")"
        pub="$(awk '/^Public Key:/ { getline; print; exit }' <<<"$keys")"
        if [ -z "$priv" ] || [ -z "$pub" ]; then
            _peers_say "rathole --genkey: unexpected output"
            return 1
        fi
        server_transport=$'\n[server.transport.noise]\n'"local_private_key = \"$priv\""
        client_transport=$'\n[client.transport.noise]\n'"remote_public_key = \"$pub\""
    fi

    # Service-level nodelay is unset (= Nagle left on) unless given, although
    # the docs say it follows the transport's nodelay (default true); set it
    # so both ends of every forwarded connection behave like the upstream's.
    cat >"$dir/server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$control"

[server.transport]
type = "$mode"
$server_transport

[server.services.bench]
token = "$token"
bind_addr = "127.0.0.1:$public"
nodelay = true
EOF
    cat >"$dir/client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$control"

[client.transport]
type = "$mode"
$client_transport

[client.services.bench]
token = "$token"
local_addr = "$upstream"
nodelay = true
EOF
    chmod 600 "$dir/server.toml" "$dir/client.toml"

    local slog="$work/rathole-$mode-server.log" clog="$work/rathole-$mode-client.log" spid cpid
    RUST_LOG=warn "$PEERS_RATHOLE" --server "$dir/server.toml" >"$slog" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    # The client would retry, but only after a back-off of up to a second.
    _peers_wait_listen 127.0.0.1 "$control" "$spid"
    RUST_LOG=warn "$PEERS_RATHOLE" --client "$dir/client.toml" >"$clog" 2>&1 &
    cpid=$!
    PIDS+=("$cpid")
    _peers_wait_forward "rathole-$mode" "127.0.0.1:$public" "$spid $cpid" "$slog" "$clog" || return 1
    PEER_ADDR="127.0.0.1:$public"
    # shellcheck disable=SC2034 # for the caller
    PEER_URL="http://$PEER_ADDR/mcp"
}

# peers_start_bore UPSTREAM_ADDR WORKDIR
#   Starts `bore server` and `bore local` forwarding to UPSTREAM_ADDR. The
#   control port is fixed (7835); if it is taken on 127.0.0.1 the control
#   channel moves to another loopback address (127.0.0.2…9, Linux routes all of
#   127/8 to lo), the public port stays on 127.0.0.1. Sets PEER_ADDR and
#   PEER_URL; appends both PIDS.
peers_start_bore() {
    local upstream=$1 work=$2
    [ -x "$PEERS_BORE" ] || { _peers_say "bore missing: run peers_install"; return 1; }
    local uhost="${upstream%:*}" uport="${upstream##*:}" control="" public i
    for i in 1 2 3 4 5 6 7 8 9; do
        if _peers_port_free "127.0.0.$i" "$PEERS_BORE_CONTROL_PORT"; then
            control="127.0.0.$i"
            break
        fi
    done
    [ -n "$control" ] || { _peers_say "bore: control port $PEERS_BORE_CONTROL_PORT taken on 127.0.0.1-9"; return 1; }
    public="$(_peers_free_ports 1)" || return 1

    local slog="$work/bore-server.log" clog="$work/bore-client.log" spid cpid
    RUST_LOG=warn "$PEERS_BORE" server --bind-addr "$control" --bind-tunnels 127.0.0.1 \
        --min-port "$public" --max-port "$public" >"$slog" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    # The client does not retry: wait for the control port first.
    _peers_wait_listen "$control" "$PEERS_BORE_CONTROL_PORT" "$spid"
    RUST_LOG=warn "$PEERS_BORE" local "$uport" --local-host "$uhost" --to "$control" \
        --port "$public" >"$clog" 2>&1 &
    cpid=$!
    PIDS+=("$cpid")
    _peers_wait_forward bore "127.0.0.1:$public" "$spid $cpid" "$slog" "$clog" || return 1
    PEER_ADDR="127.0.0.1:$public"
    # shellcheck disable=SC2034 # for the caller
    PEER_URL="http://$PEER_ADDR/mcp"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        install)
            peers_install
            echo "rathole:           $PEERS_RATHOLE"
            echo "bore:              $PEERS_BORE"
            echo "mcp-server-sqlite: $(peers_reference_sqlite)"
            echo "python:            $(peers_python)"
            ;;
        *)
            echo "usage: bench/peers.sh install   (or: source bench/peers.sh; see its header)" >&2
            exit 2
            ;;
    esac
fi
