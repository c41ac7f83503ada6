"""A stdio MCP server (newline-delimited JSON-RPC, standard library only) with
one tool, `env_sha256`, that answers the SHA-256 of one of its own
environment variables ("unset" if it has none).

Used by tests/tests/secrets.rs: `mcp-agent connect --stdio ... --env
NAME=secret:KEY` must put the secret in the child's environment, and the test
checks the hash so the value itself never crosses the tunnel.
Usage: python env_server.py
"""

import hashlib
import json
import os
import sys

TOOL = {
    "name": "env_sha256",
    "description": "SHA-256 (hex) of an environment variable of this server",
    "inputSchema": {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    },
}


def send(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def answer(method: str, params: dict) -> dict | None:
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "env-server", "version": "1"},
        }
    if method == "tools/list":
        return {"tools": [TOOL]}
    if method == "tools/call" and params.get("name") == TOOL["name"]:
        value = os.environ.get(params.get("arguments", {}).get("name", ""))
        text = "unset" if value is None else hashlib.sha256(value.encode()).hexdigest()
        return {"content": [{"type": "text", "text": text}], "isError": False}
    return None


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        mid = msg.get("id")
        if mid is None or "method" not in msg:
            continue
        result = answer(msg["method"], msg.get("params") or {})
        if result is None:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})
        else:
            send({"jsonrpc": "2.0", "id": mid, "result": result})


if __name__ == "__main__":
    main()
