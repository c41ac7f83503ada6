"""A small Streamable HTTP MCP server built with the official Python SDK (mcp 2.x).

Used by the end-to-end tests as the "local MCP server" behind the tunnel.
Usage: python mcp_server.py PORT [--stateless]
Ready once uvicorn prints "Uvicorn running".
"""

import sys
import time

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("tunnel-test-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def progress(ctx: Context, steps: int = 5, interval_ms: int = 200) -> dict:
    """Report `steps` progress notifications `interval_ms` apart; return when each was produced."""
    produced = []
    for i in range(steps):
        if i:
            await anyio.sleep(interval_ms / 1000)
        produced.append(time.time())
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    return {"produced": produced}


def main() -> None:
    port = int(sys.argv[1])
    stateless = "--stateless" in sys.argv
    server.run("streamable-http", host="127.0.0.1", port=port, stateless_http=stateless)


if __name__ == "__main__":
    main()
