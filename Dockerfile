# The `orders` binary in a small image. Every service is the same binary:
# `orders serve api|relay|projectors|all`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin orders

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 orders
COPY --from=build /src/target/release/orders /usr/local/bin/orders
USER orders
ENTRYPOINT ["orders"]
