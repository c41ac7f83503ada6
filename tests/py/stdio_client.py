"""Drives a stdio MCP server bridged by `mcp-agent connect --stdio` through the
tunnel, with the official Python SDK client (mcp 2.x). The server is the
reference `mcp-server-sqlite` (stdio only, mcp<2).

Usage: python stdio_client.py URL CA_FILE MODE TABLE
MODE is "auto" (probe 2026-07-28 server/discover, fall back to initialize) or "legacy".
Creates TABLE, inserts a row and reads it back. Prints one JSON object with
what it saw; exits non-zero on any failure.
"""

import json
import os
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def auth_headers() -> dict:
    """The relay's access token, if the test gave one (MCP_TEST_BEARER)."""
    token = os.environ.get("MCP_TEST_BEARER")
    return {"Authorization": f"Bearer {token}"} if token else {}

ROW = "héllo through the stdio bridge"


def texts(res) -> list[str]:
    return [c.text for c in res.content if getattr(c, "text", None) is not None]


def is_error(res) -> bool:
    return bool(getattr(res, "is_error", None) or getattr(res, "isError", None))


async def run(url: str, ca: str, mode: str, table: str) -> dict:
    out: dict = {"mode": mode}
    async with httpx2.AsyncClient(verify=ca, timeout=60, headers=auth_headers()) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            out["protocol_version"] = client.protocol_version
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            res = await client.call_tool(
                "create_table", {"query": f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT)"}
            )
            out["create"] = {"error": is_error(res), "text": texts(res)}
            res = await client.call_tool("write_query", {"query": f"INSERT INTO {table} (body) VALUES ('{ROW}')"})
            out["insert"] = {"error": is_error(res), "text": texts(res)}
            res = await client.call_tool("read_query", {"query": f"SELECT id, body FROM {table}"})
            out["read"] = {"error": is_error(res), "text": texts(res)}
            res = await client.call_tool("list_tables", {})
            out["tables"] = {"error": is_error(res), "text": texts(res)}
    return out


def main() -> None:
    url, ca, mode, table = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    print(json.dumps(anyio.run(run, url, ca, mode, table)))


if __name__ == "__main__":
    main()
