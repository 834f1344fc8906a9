# Tessera: both binaries in one image. The tracker is the default entrypoint:
#   docker build -t tessera .
#   docker run -p 7070:7070 -v tessera:/var/lib/tessera tessera
#   docker run --entrypoint peer -v alice:/var/lib/tessera tessera --tracker http://HOST:7070 status
# The build needs only cargo (protobuf is compiled in Rust, SQLite is bundled, TLS is rustls).

# The toolchain the workspace is built and tested with (Cargo.toml's rust-version is the
# oldest it may build with).
ARG RUST_VERSION=1.95
ARG DEBIAN=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tracker -p peer \
    && mkdir -p /out \
    && cp target/release/tracker target/release/peer /out/

FROM debian:${DEBIAN}-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/tessera tessera
COPY --from=build /out/tracker /out/peer /usr/local/bin/
USER tessera:tessera
WORKDIR /var/lib/tessera
# Listen on every interface inside the container; keep the database and a peer's home in
# the volume.
ENV TRACKER_LISTEN=0.0.0.0:7070 \
    TRACKER_DATABASE_URL=sqlite:///var/lib/tessera/tracker.db?mode=rwc \
    PEER_HOME=/var/lib/tessera/peer
VOLUME ["/var/lib/tessera"]
EXPOSE 7070
ENTRYPOINT ["tracker"]
