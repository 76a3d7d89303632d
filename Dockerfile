# Build
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin portatek-gateway

# Run
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 portatek
COPY --from=build /src/target/release/portatek-gateway /usr/local/bin/portatek-gateway
COPY config.example.toml /etc/portatek/config.example.toml
USER portatek
ENV PORTATEK_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/portatek-gateway"]
