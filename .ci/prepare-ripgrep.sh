#!/usr/bin/env bash
# Installs ripgrep from Debian for OpenCode's text search (GET /find, which the gateway serves as
# /v1/find/text; tests/it/opencode_surface/). OpenCode uses `rg` from PATH, else downloads a
# release from the internet, which no test machine can reach.
# Idempotent: nothing to do when `rg` is on PATH.
set -euo pipefail
command -v rg >/dev/null 2>&1 && exit 0
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
echo "[prepare-ripgrep] installing ripgrep" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ripgrep >/dev/null
