#!/usr/bin/env bash
# Installs the Python clients the tests drive (PyPI, pinned): openai-python (parses the
# gateway's chat and Responses streams), openapi-spec-validator (checks /openapi.json as
# OpenAPI 3.1) and schemathesis (fuzzes the API from that description), into one venv, and
# links its interpreter as $1/portatek-python (put $1 on PATH, or point PORTATEK_PYTHON at it).
# Idempotent: nothing is installed when the pinned versions are already there.
set -euo pipefail
OPENAI=2.8.1
SPEC_VALIDATOR=0.7.2
SCHEMATHESIS=4.32.5
# Newer hypothesis releases trip a CPython 3.11 `ast` bug in schemathesis's coverage phase.
HYPOTHESIS=6.130.12
BIN_DIR=${1:?usage: $0 BIN_DIR}
if [ "$(id -u)" = 0 ]; then
  CACHE=${PORTATEK_CI_CACHE:-/var/cache/portatek-ci}
else
  CACHE=${PORTATEK_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portatek-ci}
fi
VENV=$CACHE/python-tools-$OPENAI-$SPEC_VALIDATOR-$SCHEMATHESIS-$HYPOTHESIS
log() { echo "[prepare-python] $*" >&2; }

if [ ! -x "$VENV/bin/python" ] || [ ! -e "$VENV/.complete" ]; then
  t0=$SECONDS
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "openai==$OPENAI" "openapi-spec-validator==$SPEC_VALIDATOR" "schemathesis==$SCHEMATHESIS" \
    "hypothesis==$HYPOTHESIS"
  touch "$VENV/.complete"
  log "installed openai $OPENAI, openapi-spec-validator $SPEC_VALIDATOR, schemathesis $SCHEMATHESIS in $((SECONDS - t0)) s"
fi
mkdir -p "$BIN_DIR"
# A wrapper, not a symlink: Python finds its venv (pyvenv.cfg) from the path it was started by.
rm -f "$BIN_DIR/portatek-python"
printf '#!/bin/sh\nexec "%s/bin/python" "$@"\n' "$VENV" > "$BIN_DIR/portatek-python"
chmod +x "$BIN_DIR/portatek-python"
ln -sfn "$VENV/bin/schemathesis" "$BIN_DIR/schemathesis"
