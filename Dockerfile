# syntax=docker/dockerfile:1.7
# AI-CD images: `docker build --target server -t aicd-server .` and `--target worker -t aicd-worker .`
# Dependencies are compiled in their own layer (cargo-chef), so a change to the workspace's code
# rebuilds only the workspace. No secret is read at build time: configuration is environment at run.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- toolchain with cargo-chef -------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.73
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# --- the dependency recipe (changes only when manifests or Cargo.lock do) ----------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- dependencies, then the two binaries ---------------------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package aicd-server --package aicd-worker
COPY . .
RUN cargo build --release --locked --package aicd-server --package aicd-worker \
 && install -D -m 0755 target/release/aicd-server /out/aicd-server \
 && install -D -m 0755 target/release/aicd-worker /out/aicd-worker

# --- what both services run on: Debian slim, CA certificates, curl for the health check ----------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="AI-CD" \
      org.opencontainers.image.description="AI-CD turns GitHub issues into reviewed pull requests" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/aicd-dev/aicd" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 aicd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/aicd --create-home --shell /usr/sbin/nologin aicd
WORKDIR /var/lib/aicd
ENV AICD_LOG_FORMAT=json \
    AICD_DATA_DIR=/var/lib/aicd/data
USER 10001:10001

# --- aicd-server: the HTTP API (also runs `migrate`, `config check`, `admin ...`) ----------------
FROM runtime AS server
COPY --from=builder /out/aicd-server /usr/local/bin/aicd-server
ENV AICD_LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["aicd-server"]
CMD ["serve"]

# --- aicd-worker: claims jobs and drives them to a pull request; /health, /ready, /metrics on 9090
FROM runtime AS worker
COPY --from=builder /out/aicd-worker /usr/local/bin/aicd-worker
ENV AICD_WORKER_LISTEN_ADDR=0.0.0.0:9090
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/health"]
ENTRYPOINT ["aicd-worker"]
