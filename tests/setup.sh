#!/usr/bin/env bash
# Installs what the end-to-end tests need, idempotently, into a cache dir
# (default ~/.cache/mcp-tunnel; override with MCP_TEST_CACHE):
#   venv/          official MCP Python SDK (PyPI `mcp` 2.x) — client and test server
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
