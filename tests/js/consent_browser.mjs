// Signs in on the relay's consent page in real headless Chromium (Debian's),
// approves, and reports where the browser landed. A screenshot of the filled
// page is written as a test artifact.
//   node consent_browser.mjs AUTHORIZE_URL EMAIL PASSWORD SCREENSHOT.png
import { createRequire } from "node:module";

// playwright-core lives in the test cache (tests/setup.sh), not next to this file.
const require = createRequire(`${process.env.MCP_NODE_MODULES}/`);
const { chromium } = require("playwright-core");

const [authorizeUrl, email, password, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  // The relay runs with its dev CA in tests; the browser is told to accept it.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(authorizeUrl);
  const title = await page.title();
  const heading = await page.textContent("h1");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.screenshot({ path: shot, fullPage: true });
  await Promise.all([
    page.waitForURL((u) => u.pathname === "/callback"),
    page.getByRole("button", { name: "Sign in and allow" }).click(),
  ]);
  console.log(JSON.stringify({ title, heading, landed: page.url() }));
} finally {
  await browser.close();
}
