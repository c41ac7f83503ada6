#!/usr/bin/env bash
# Calls one MCP tool over Streamable HTTP with curl: initialize, initialized,
# tools/call. Prints the JSON-RPC result.
#   mcp-call.sh URL TOOL ARGS_JSON [--ca FILE] [--token BEARER]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 URL TOOL ARGS_JSON [--ca FILE] [--token BEARER]" >&2; exit 2; }
url=$1 tool=$2 args=$3; shift 3
curl_opts=(-sS --fail-with-body -H 'content-type: application/json' -H 'accept: application/json, text/event-stream')
while [ $# -gt 0 ]; do
  case $1 in
    --ca) curl_opts+=(--cacert "$2"); shift 2 ;;
    --token) curl_opts+=(-H "authorization: Bearer $2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
init='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-call","version":"1"}}}'
session=$(curl "${curl_opts[@]}" -D - -o /dev/null -d "$init" "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}')
hdr=(-H 'mcp-protocol-version: 2025-06-18')
[ -n "$session" ] && hdr+=(-H "mcp-session-id: $session")
curl "${curl_opts[@]}" "${hdr[@]}" -o /dev/null -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$url"
call=$(printf '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"%s","arguments":%s}}' "$tool" "$args")
curl "${curl_opts[@]}" "${hdr[@]}" -d "$call" "$url" | sed -n 's/^data: //; /^{/p'
[ -n "$session" ] && curl "${curl_opts[@]}" "${hdr[@]}" -o /dev/null -X DELETE "$url" || true
