#!/usr/bin/env bash
# Installs kubernetes-validate (PyPI; validates manifests offline against bundled Kubernetes
# schemas) into a venv, and links it as $1/kubernetes-validate (put $1 on PATH).
# Idempotent: nothing is installed when the pinned version is already there.
set -euo pipefail
VERSION=1.37.0
BIN_DIR=${1:?usage: $0 BIN_DIR}
if [ "$(id -u)" = 0 ]; then
  CACHE=${PORTATEK_CI_CACHE:-/var/cache/portatek-ci}
else
  CACHE=${PORTATEK_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portatek-ci}
fi
VENV=$CACHE/kubernetes-validate-$VERSION
log() { echo "[prepare-kubernetes-validate] $*" >&2; }

if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  t0=$SECONDS
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's own python3 needs python3-venv for this.
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$VERSION"
  log "installed kubernetes-validate $VERSION in $((SECONDS - t0)) s"
fi
mkdir -p "$BIN_DIR"
ln -sfn "$VENV/bin/kubernetes-validate" "$BIN_DIR/kubernetes-validate"
