#!/usr/bin/env bash
# Runs the whole thing on this machine with embedded defaults:
#   a dev relay (self-made CA, https://localhost:8443) + an agent serving the
#   built-in SQLite tool on a sample shop database, then prints the MCP URL
#   and a command that calls it. Ctrl-C stops everything.
#
#   deploy/quickstart.sh            # port 8443, state in ./.demo
#   PORT=9443 deploy/quickstart.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
port="${PORT:-8443}"
demo="$root/.demo"
mkdir -p "$demo"

echo "building mcp-relay and mcp-agent (release)…"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p mcp-relay -p mcp-agent
bin="${CARGO_TARGET_DIR:-$root/target}/release"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/mcp-relay" serve --dev --state "$demo/relay" \
  --https "127.0.0.1:$port" --quic "127.0.0.1:$port" 2>"$demo/relay.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -f "$demo/relay/endpoints.json" ] && break; sleep 0.1; done
[ -f "$demo/relay/endpoints.json" ] || { echo "the relay did not start; see $demo/relay.log"; exit 1; }

[ -f "$demo/token" ] || "$bin/mcp-relay" agent-tokens create --label quickstart --state "$demo/relay" >"$demo/token" 2>/dev/null
[ -f "$demo/shop.db" ] || "$bin/mcp-agent" demo-db "$demo/shop.db" 2>/dev/null

MCP_AGENT_TOKEN="$(cat "$demo/token")" "$bin/mcp-agent" connect \
  --relay "https://localhost:$port" --ca "$demo/relay/dev-ca.pem" --db "$demo/shop.db" &
pids+=($!)
sleep 1.5
url="https://localhost:$port/t/shop/mcp"
bearer="$("$bin/mcp-relay" tokens issue --user demo@example.com --tunnel shop --ttl 8h --state "$demo/relay" 2>/dev/null)"
cat <<MSG

  MCP URL:  $url     (trusts $demo/relay/dev-ca.pem)
  Access token for it (8 h; more with: mcp-relay tokens issue --user YOU --tunnel shop --state $demo/relay):
    $bearer

  Call it:  $root/deploy/mcp-call.sh $url read_query '{"query":"SELECT name, price FROM products ORDER BY price DESC LIMIT 3"}' --ca $demo/relay/dev-ca.pem --token $bearer

  Each request shows up below. Ctrl-C stops the relay and the agent.

MSG
wait
