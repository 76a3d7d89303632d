# PorTaTek Gateway with the pinned OpenCode in one image (linux/amd64).
#
#   docker build -t portatek-gateway .        builds both binaries (the last stage, `runtime`)
#   docker run -p 8080:8080 -e PORTATEK_API_KEYS=change-me -e ANTHROPIC_API_KEY=... portatek-gateway
#
# The gateway starts and supervises OpenCode itself (embedded mode: no OPENCODE_BASE_URL), as the
# same non-root user, on a loopback port with a random password. OpenCode keeps its data under
# HOME (/home/app): mount a volume there (or a tmpfs with --read-only) to keep or discard it.
#
# Tests (tests/it/container/) build `--target runtime-prebuilt` from a context whose dist/ holds
# prebuilt binaries, so that no rust or node image has to be pulled.

# The OpenCode version the gateway is tested with. Must equal the OPENCODE_VERSION file
# (tests/it/deploy_manifests/ checks it: a Dockerfile ARG default cannot read a file).
ARG OPENCODE_VERSION=2.1.2

# ---- gateway binary ----
FROM rust:1-bookworm AS gateway-build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares [[bench]] overhead: without benches/ the manifest does not load.
COPY benches ./benches
RUN cargo build --release --locked --bin portatek-gateway

# ---- OpenCode: the npm package @opencode/cli-linux-x64 is one glibc-linked executable ----
FROM node:20-bookworm-slim AS opencode-build
ARG OPENCODE_VERSION
ARG TARGETARCH
RUN if [ "${TARGETARCH:-amd64}" != amd64 ]; then \
      echo "only linux/amd64 is supported (@opencode/cli-linux-x64)" >&2; exit 1; fi \
 && npm install --no-audit --no-fund --prefix /oc "@opencode/cli-linux-x64@${OPENCODE_VERSION}" \
 && /oc/node_modules/@opencode/cli-linux-x64/bin/opencode --version

# ---- everything but the two binaries ----
FROM debian:bookworm-slim AS runtime-base
# tini as PID 1 reaps the zombies of OpenCode's subprocesses and passes SIGTERM on to the gateway.
# ca-certificates: for providers behind a private CA (NODE_EXTRA_CA_CERTS) and git.
# Installed only when missing (the tests' offline base image already has both).
RUN if ! dpkg -s tini ca-certificates >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends tini ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --uid 10001 --user-group --home-dir /home/app --create-home --shell /usr/sbin/nologin app
# For reference: every key with its default. Mount your own file and point PORTATEK_CONFIG at it.
COPY config.example.toml /etc/portatek/config.example.toml
USER 10001:10001
WORKDIR /home/app
ENV HOME=/home/app \
    PORTATEK_LISTEN=0.0.0.0:8080 \
    PORTATEK_LOG_FORMAT=json \
    OPENCODE_BIN=/usr/local/bin/opencode
EXPOSE 8080
# Liveness only (never depends on OpenCode); readiness is GET /health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/portatek-gateway", "--healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/portatek-gateway"]

# ---- tests: binaries from the build context's dist/ ----
FROM runtime-base AS runtime-prebuilt
COPY dist/portatek-gateway dist/opencode /usr/local/bin/

# ---- default (last) stage: the binaries built above ----
FROM runtime-base AS runtime
COPY --from=gateway-build /src/target/release/portatek-gateway /usr/local/bin/
COPY --from=opencode-build /oc/node_modules/@opencode/cli-linux-x64/bin/opencode /usr/local/bin/
