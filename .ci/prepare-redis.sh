#!/usr/bin/env bash
# Installs Debian's redis-server for the shared-store tests (tests/it/store.rs, tests/it/scale_out.rs),
# which start their own servers on free loopback ports. The package's own service is not wanted:
# policy-rc.d keeps it from starting (and from taking port 6379), where a service manager runs.
# Idempotent: nothing to do when `redis-server` is on PATH.
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
echo "[prepare-redis] installing redis-server" >&2
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  made_policy=1
fi
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
[ -n "$made_policy" ] && $SUDO rm -f "$policy"
exit 0
