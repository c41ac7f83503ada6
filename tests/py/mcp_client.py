"""Drives an MCP server through the tunnel with the official Python SDK client (mcp 2.x).

Usage: python mcp_client.py URL CA_FILE MODE
MODE is "auto" (probe 2026-07-28 server/discover, fall back to initialize) or "legacy".
Prints one JSON object with what it saw; exits non-zero on any failure.
"""

import json
import os
import sys
import time

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def auth_headers() -> dict:
    """The relay's access token, if the test gave one (MCP_TEST_BEARER)."""
    token = os.environ.get("MCP_TEST_BEARER")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def run(url: str, ca: str, mode: str) -> dict:
    out: dict = {"mode": mode}
    async with httpx2.AsyncClient(verify=ca, timeout=30, headers=auth_headers()) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            out["protocol_version"] = client.protocol_version
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            res = await client.call_tool("add", {"a": 2, "b": 40})
            out["add"] = [c.text for c in res.content if getattr(c, "text", None) is not None]
            out["add_structured"] = res.structured_content
            res = await client.call_tool("echo", {"text": "héllo through the tunnel"})
            out["echo"] = [c.text for c in res.content if getattr(c, "text", None) is not None]

            received: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                received.append(time.time())

            res = await client.call_tool(
                "progress", {"steps": 5, "interval_ms": 250}, progress_callback=on_progress
            )
            out["progress_received"] = received
            texts = [c.text for c in res.content if getattr(c, "text", None) is not None]
            out["progress_produced"] = json.loads(texts[0])["produced"] if texts else []
    return out


def main() -> None:
    url, ca, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    print(json.dumps(anyio.run(run, url, ca, mode)))


if __name__ == "__main__":
    main()
