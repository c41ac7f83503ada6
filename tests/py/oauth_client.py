"""The official Python SDK's OAuth client (mcp 2.x) against the relay, headless.

Usage: python oauth_client.py URL CA_FILE EMAIL PASSWORD [CLIENT_METADATA_URL]
With CLIENT_METADATA_URL the client identifies itself by that Client ID Metadata Document
instead of registering (DCR). With PASSWORD "oidc", the person signs in at the relay's
upstream OpenID Connect provider instead (oidc-provider's development login page, EMAIL as
the login name), and approves on the relay's consent page.
It sends no token, follows the 401 to the protected-resource and authorization-server
metadata, registers by DCR, "opens the browser" by driving the relay's sign-in and
consent form with a cookie-keeping HTTP client, exchanges the code (PKCE), then lists
tools and calls one through the tunnel. Prints one JSON object.
"""

import html
import json
import re
import sys
import urllib.parse

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken


class Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def run(url: str, ca: str, email: str, password: str, metadata_url: str | None) -> dict:
    out: dict = {}
    browser = httpx2.AsyncClient(verify=ca, follow_redirects=False, timeout=30)
    got: dict = {}

    async def oidc_sign_in(authorize_url: str, page: httpx2.Response) -> str:
        """Follows "Sign in with ..." through the provider and back; returns the final redirect."""
        m = re.search(r'<a class="button" href="([^"]+)">Sign in with ([^<]+)</a>', page.text)
        assert m, page.text
        out["provider_button"] = html.unescape(m.group(2))
        resp = await browser.get(urllib.parse.urljoin(authorize_url, html.unescape(m.group(1))))
        for _ in range(20):
            if resp.status_code in (302, 303):
                loc = urllib.parse.urljoin(str(resp.url), resp.headers["location"])
                if loc.startswith("http://127.0.0.1:39999/"):
                    return loc
                resp = await browser.get(loc)
                continue
            assert resp.status_code == 200, (resp.status_code, resp.url, resp.text[:2000])
            form = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"|<form[^>]*method="post"[^>]*action="([^"]+)"', resp.text)
            assert form, resp.text[:2000]
            action = html.unescape(form.group(1) or form.group(2))
            fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', resp.text)}
            if action == "/oidc/consent":
                out["consent_page"] = re.sub(r"<[^>]+>", " ", resp.text)
                fields["decision"] = "allow"
            elif fields.get("prompt") == "login":
                fields.update(login=email, password="any")
            resp = await browser.post(urllib.parse.urljoin(str(resp.url), action), data=fields)
        raise AssertionError("too many steps in the provider sign-in")

    async def redirect_handler(authorize_url: str) -> None:
        out["authorize_url"] = authorize_url
        page = await browser.get(authorize_url)
        if password == "oidc":
            loc = await oidc_sign_in(authorize_url, page)
            q = urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)
            got.update(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])
            return
        assert page.status_code == 200, page.text
        fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)}
        fields.update(email=email, password=password, decision="allow")
        action = urllib.parse.urljoin(authorize_url, "/authorize")
        done = await browser.post(action, data=fields)
        assert done.status_code in (302, 303), (done.status_code, done.text)
        q = urllib.parse.parse_qs(urllib.parse.urlparse(done.headers["location"]).query)
        got.update(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=got["code"], state=got["state"], iss=got["iss"])

    storage = Memory()
    auth = OAuthClientProvider(
        url,
        OAuthClientMetadata(
            client_name="tunnel e2e",
            redirect_uris=["http://127.0.0.1:39999/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage,
        redirect_handler,
        callback_handler,
        client_metadata_url=metadata_url,
    )
    async with httpx2.AsyncClient(verify=ca, timeout=30, auth=auth) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            res = await client.call_tool("list_tables", {})
            out["list_tables_error"] = bool(res.is_error)
    out["registered_client"] = storage.client.client_id if storage.client else None
    out["has_refresh_token"] = bool(storage.tokens and storage.tokens.refresh_token)
    out["iss"] = got.get("iss")
    await browser.aclose()
    return out


def main() -> None:
    url, ca, email, password = sys.argv[1:5]
    metadata_url = sys.argv[5] if len(sys.argv) > 5 else None
    print(json.dumps(anyio.run(run, url, ca, email, password, metadata_url)))


if __name__ == "__main__":
    main()
