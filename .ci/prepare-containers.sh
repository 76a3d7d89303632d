#!/usr/bin/env bash
# Prepares what tests/it/container/ needs on a Debian bookworm machine with no reachable container
# registry: podman + runc from Debian, and the `docker.io/library/debian:bookworm-slim` base image
# made locally with debootstrap from Debian's packages (the same mirror apt uses).
#
# Idempotent and quick when already done (a few hundred ms). Fresh machine: about 40-70 s.
# Expects CONTAINERS_CONF to point at .ci/containers.conf (set by .ci/run), so that podman uses
# runc and ulimits below this machine's hard limits.
#
# Base image cache, cheapest first:
#   1. the image is in podman's storage with our label (the key below) -> nothing to do
#   2. a tarball of the root file system in $PORTATEK_CI_CACHE younger than 7 days -> import (3-7 s)
#   3. debootstrap (30-60 s), then tar to the cache and import
# The mirror's address is never printed (debootstrap's output goes to a log, shown with it masked).
set -euo pipefail

BASE_IMAGE=docker.io/library/debian:bookworm-slim
# Bump when the rootfs recipe changes: an image or tarball with another key is rebuilt.
BASE_KEY=bookworm-minbase-ca-tini-1
INCLUDE=ca-certificates,tini
if [ "$(id -u)" = 0 ]; then
  SUDO=
  CACHE=${PORTATEK_CI_CACHE:-/var/cache/portatek-ci}
else
  SUDO=sudo
  CACHE=${PORTATEK_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portatek-ci}
fi
log() { echo "[prepare-containers] $*" >&2; }
t0=$SECONDS

# 1. packages (--no-install-recommends: no crun, podman picks runc)
need=()
for p in podman runc debootstrap binutils; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. base image
have_key=$(podman image inspect --format '{{index .Config.Labels "io.portatek.ci-base"}}' "$BASE_IMAGE" 2>/dev/null || true)
if [ "$have_key" != "$BASE_KEY" ]; then
  mkdir -p "$CACHE"
  tarball=$CACHE/debian-$BASE_KEY.tar
  if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +7)" ]; then
    mirror=
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
      mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
      mirror=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    [ -n "$mirror" ] || { log "no Debian mirror found in apt's sources"; exit 1; }
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    log "debootstrap --variant=minbase --include=$INCLUDE bookworm (mirror from apt's sources)"
    s=$SECONDS
    if ! $SUDO debootstrap --variant=minbase --include="$INCLUDE" bookworm "$rootfs" "$mirror" \
        >"$CACHE/debootstrap.log" 2>&1; then
      log "debootstrap failed; end of its log (mirror masked):"
      tail -n 30 "$CACHE/debootstrap.log" | sed "s|$mirror|<mirror>|g" >&2
      $SUDO rm -rf "$rootfs"
      exit 1
    fi
    sed -i "s|$mirror|<mirror>|g" "$CACHE/debootstrap.log"
    log "debootstrap took $((SECONDS - s)) s"
    # Like the official image: no package caches, and the public mirror in its apt sources.
    $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    echo "deb http://deb.debian.org/debian bookworm main" | $SUDO tee "$rootfs/etc/apt/sources.list" >/dev/null
    $SUDO tar -C "$rootfs" -cf "$tarball.tmp" .
    $SUDO chown "$(id -u):$(id -g)" "$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    $SUDO rm -rf "$rootfs"
    find "$CACHE" -maxdepth 1 -name 'debian-bookworm-minbase-*.tar' ! -name "debian-$BASE_KEY.tar" -delete
  fi
  log "importing $BASE_IMAGE"
  podman import -q --change "LABEL io.portatek.ci-base=$BASE_KEY" "$tarball" "$BASE_IMAGE" >/dev/null
fi
log "ready in $((SECONDS - t0)) s"
