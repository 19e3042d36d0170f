# ferrokube in one image: the binary plus etcd, so `ferrokube up` works inside it.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends etcd-server ca-certificates procps && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ferrokube /usr/local/bin/ferrokube
EXPOSE 6443
ENTRYPOINT ["ferrokube"]
CMD ["up", "--data-dir", "/var/lib/ferrokube"]
