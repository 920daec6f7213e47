# connres as a container image: built from source in the Rust image, run from Debian
# slim as an unprivileged user. docs/operations.md ("Containers") says how to run it:
#
#   docker build -t connres .
#   docker run --rm -v "$PWD/resources.yaml:/etc/connres/resources.yaml:ro" \
#     -e NATS_URL=nats://nats.example.internal:4222 connres
#
# The config is read from /etc/connres/resources.yaml (CONNRES_CONFIG); mount a file or
# a directory there. The NATS URL comes from NATS_URL, --nats or the file's `nats.url`:
# the image sets none, since inside a container 127.0.0.1 is the container itself.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# What the build reads: the manifests and lockfile, the workspace's ownership crate,
# the vendored async-nats that Cargo.toml patches in, and the sources.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY vendor vendor
COPY src src
RUN cargo build --release --locked --bin connres \
    && install -D -m 0755 target/release/connres /out/connres

FROM debian:bookworm-slim
# ca-certificates: the system roots for `tls://` servers without `nats.tls.ca`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 connres \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin connres \
    && mkdir -p /etc/connres
COPY --from=build /out/connres /usr/local/bin/connres
ENV CONNRES_CONFIG=/etc/connres/resources.yaml \
    CONNRES_METRICS_ADDR=0.0.0.0:9464
# /metrics, /healthz and /readyz (CONNRES_METRICS_ADDR).
EXPOSE 9464
USER 10001:10001
# SIGTERM (docker stop, Kubernetes) drains and exits 0; SIGHUP reloads the config.
ENTRYPOINT ["/usr/local/bin/connres", "serve"]
