"""An MCP client driven line by line, for the policy end-to-end test.

Usage: python policy_client.py URL CA_FILE EMAIL PASSWORD
Signs in at the relay as EMAIL with the official Python SDK's OAuth client (DCR, the relay's
sign-in and consent form driven headlessly), opens an MCP session, prints {"ready": true}
(or {"ready": false, "error": ...} when the relay refuses), then reads commands from stdin,
one per line, and prints one JSON line per command:
  list                -> {"tools": [names]}
  call NAME JSONARGS  -> {"ok": bool, "is_error": bool, "error": str|null, "text": str|null}
  quit
"""

import html
import json
import re
import sys
import urllib.parse

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from oauth_client import Memory  # the same in-memory token storage


def say(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def describe(e: BaseException) -> str:
    parts = [f"{type(e).__name__}: {e}"]
    for sub in getattr(e, "exceptions", []) or []:
        parts.append(describe(sub))
    return " | ".join(parts)


async def run(url: str, ca: str, email: str, password: str) -> None:
    browser = httpx2.AsyncClient(verify=ca, follow_redirects=False, timeout=30)
    got: dict = {}

    async def redirect_handler(authorize_url: str) -> None:
        page = await browser.get(authorize_url)
        assert page.status_code == 200, page.text
        fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)}
        fields.update(email=email, password=password, decision="allow")
        done = await browser.post(urllib.parse.urljoin(authorize_url, "/authorize"), data=fields)
        assert done.status_code in (302, 303), (done.status_code, done.text)
        q = urllib.parse.parse_qs(urllib.parse.urlparse(done.headers["location"]).query)
        got.update(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=got["code"], state=got["state"], iss=got["iss"])

    auth = OAuthClientProvider(
        url,
        OAuthClientMetadata(
            client_name="policy e2e",
            redirect_uris=["http://127.0.0.1:39999/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        Memory(),
        redirect_handler,
        callback_handler,
    )
    stdin = anyio.wrap_file(sys.stdin)
    try:
        async with httpx2.AsyncClient(verify=ca, timeout=30, auth=auth) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                say({"ready": True})
                async for line in stdin:
                    cmd = line.strip().split(" ", 2)
                    if not cmd or cmd[0] == "quit":
                        break
                    if cmd[0] == "list":
                        tools = await client.list_tools()
                        say({"tools": sorted(t.name for t in tools.tools)})
                    elif cmd[0] == "call":
                        args = json.loads(cmd[2]) if len(cmd) > 2 else {}
                        try:
                            res = await client.call_tool(cmd[1], args)
                            text = " ".join(getattr(c, "text", "") for c in res.content)
                            say({"ok": not res.is_error, "is_error": bool(res.is_error), "error": None, "text": text})
                        except Exception as e:  # a JSON-RPC error from the relay
                            say({"ok": False, "is_error": False, "error": describe(e), "text": None})
    except Exception as e:
        say({"ready": False, "error": describe(e)})
    finally:
        await browser.aclose()


def main() -> None:
    url, ca, email, password = sys.argv[1:5]
    anyio.run(run, url, ca, email, password)


if __name__ == "__main__":
    main()
