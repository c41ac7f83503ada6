"""Drives the built-in SQLite tool through the tunnel with the official Python SDK (mcp 2.x).

Usage: python sqlite_client.py URL CA_FILE MODE [--writes]
With --writes (an agent started with --allow-writes) it creates a table, writes rows and reads
them back instead.
Calls every read tool on the demo shop database, reads resources and the prompt, and checks
that each tool's structuredContent says the same as its text. Prints one JSON object.
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


def text_of(res) -> str:
    return "\n".join(c.text for c in res.content if getattr(c, "text", None) is not None)


def check_rows_in_text(structured: dict, text: str) -> None:
    """Every column name and every cell value of the structured rows appears in the text."""
    for col in structured["columns"]:
        assert str(col) in text, f"column {col!r} missing from text"
    for row in structured["rows"]:
        for cell in row:
            if cell is None:
                continue
            rendered = json.dumps(cell, ensure_ascii=False) if isinstance(cell, (dict, list)) else str(cell)
            assert rendered.strip('"') in text, f"cell {cell!r} missing from text:\n{text}"


async def run(url: str, ca: str, mode: str) -> dict:
    out: dict = {"mode": mode}
    async with httpx2.AsyncClient(verify=ca, timeout=30, headers=auth_headers()) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            out["protocol_version"] = client.protocol_version
            tools = (await client.list_tools()).tools
            out["tools"] = sorted(t.name for t in tools)
            out["read_only_hints"] = sorted(
                t.name for t in tools if t.annotations is not None and t.annotations.read_only_hint
            )

            res = await client.call_tool("list_tables", {})
            assert not res.is_error, text_of(res)
            out["tables"] = sorted(t["name"] for t in res.structured_content["tables"])
            for t in res.structured_content["tables"]:
                assert t["name"] in text_of(res)

            res = await client.call_tool("describe_table", {"table_name": "orders"})
            assert not res.is_error, text_of(res)
            cols = [c["name"] for c in res.structured_content["columns"]]
            out["orders_columns"] = cols
            for c in cols:
                assert c in text_of(res)

            res = await client.call_tool(
                "read_query",
                {
                    "query": "SELECT id, name, price, stock FROM products WHERE id <= ? ORDER BY id",
                    "params": [3],
                },
            )
            assert not res.is_error, text_of(res)
            check_rows_in_text(res.structured_content, text_of(res))
            out["read_rows"] = res.structured_content["rows"]

            res = await client.call_tool(
                "read_query",
                {"query": "WITH c AS (SELECT count(*) AS n FROM customers) SELECT n FROM c"},
            )
            assert not res.is_error, text_of(res)
            out["customer_count"] = res.structured_content["rows"][0][0]

            res = await client.call_tool("explain_query", {"query": "SELECT * FROM orders WHERE customer_id = 1"})
            assert not res.is_error, text_of(res)
            out["explain_text"] = text_of(res)

            res = await client.call_tool("read_query", {"query": "DELETE FROM customers"})
            out["delete_refused"] = bool(res.is_error)
            out["delete_message"] = text_of(res)

            resources = (await client.list_resources()).resources
            out["resources"] = sorted(str(r.uri) for r in resources)
            schema = await client.read_resource("sqlite://schema")
            out["schema_has_orders"] = "CREATE TABLE" in schema.contents[0].text and "orders" in schema.contents[0].text

            prompts = (await client.list_prompts()).prompts
            out["prompts"] = [p.name for p in prompts]
            got = await client.get_prompt("sqlite-analyst", {"question": "who buys most?"})
            out["prompt_mentions_question"] = "who buys most?" in got.messages[0].content.text
    return out


async def run_writes(url: str, ca: str, mode: str) -> dict:
    out: dict = {"mode": mode}
    async with httpx2.AsyncClient(verify=ca, timeout=30, headers=auth_headers()) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = (await client.list_tools()).tools
            out["tools"] = sorted(t.name for t in tools)
            out["destructive"] = sorted(
                t.name for t in tools if t.annotations is not None and t.annotations.destructive_hint
            )
            table = f"notes_{mode}"
            res = await client.call_tool(
                "create_table", {"query": f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT)"}
            )
            assert not res.is_error, text_of(res)
            res = await client.call_tool(
                "write_query",
                {"query": f"INSERT INTO {table} (body) VALUES (?), (?)", "params": ["hello", "wörld"]},
            )
            assert not res.is_error, text_of(res)
            out["rows_affected"] = res.structured_content.get("rows_affected")
            res = await client.call_tool("read_query", {"query": f"SELECT body FROM {table} ORDER BY id"})
            assert not res.is_error, text_of(res)
            check_rows_in_text(res.structured_content, text_of(res))
            out["bodies"] = [r[0] for r in res.structured_content["rows"]]
            res = await client.call_tool("read_query", {"query": f"DELETE FROM {table}"})
            out["read_query_refuses_write"] = bool(res.is_error)
            res = await client.call_tool("create_table", {"query": f"DROP TABLE {table}"})
            out["create_table_refuses_drop"] = bool(res.is_error)
    return out


def main() -> None:
    url, ca, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    fn = run_writes if "--writes" in sys.argv[4:] else run
    print(json.dumps(anyio.run(fn, url, ca, mode)))


if __name__ == "__main__":
    main()
