"""Approves an `mcp-agent login` device code by signing in at the relay's upstream OIDC provider.

Usage: python oidc_device_approve.py DEVICE_PAGE_URL CA_FILE LOGIN_NAME
Opens the relay's /device page (verification_uri_complete), follows "Sign in with ... and
approve" through oidc-provider's development login and consent pages with a cookie-keeping
HTTP client, and prints {"title": <final page title>, "text": <final page text>} as JSON.
"""

import html
import json
import re
import sys
import urllib.parse

import anyio
import httpx2


async def run(url: str, ca: str, login: str) -> dict:
    async with httpx2.AsyncClient(verify=ca, follow_redirects=False, timeout=30) as browser:
        page = await browser.get(url)
        assert page.status_code == 200, page.text
        m = re.search(r'<a class="button" href="([^"]+)">Sign in with ([^<]+) and approve</a>', page.text)
        assert m, page.text
        resp = await browser.get(urllib.parse.urljoin(url, html.unescape(m.group(1))))
        for _ in range(20):
            if resp.status_code in (302, 303):
                resp = await browser.get(urllib.parse.urljoin(str(resp.url), resp.headers["location"]))
                continue
            form = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"', resp.text)
            if resp.status_code != 200 or not form:
                title = re.search(r"<h1>([^<]*)</h1>", resp.text)
                return {
                    "status": resp.status_code,
                    "title": html.unescape(title.group(1)) if title else "",
                    "text": re.sub(r"<[^>]+>", " ", resp.text),
                }
            fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', resp.text)}
            if fields.get("prompt") == "login":
                fields.update(login=login, password="any")
            resp = await browser.post(urllib.parse.urljoin(str(resp.url), html.unescape(form.group(1))), data=fields)
        raise AssertionError("too many steps")


def main() -> None:
    url, ca, login = sys.argv[1:4]
    print(json.dumps(anyio.run(run, url, ca, login)))


if __name__ == "__main__":
    main()
