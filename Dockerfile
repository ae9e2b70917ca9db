# tarjama: gRPC Arabic → English translation and summaries.
#
#   docker build -t tarjama:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 -v tarjama-models:/models tarjama:0.1.0
#
# The first start downloads the pinned models (~1.5 GB) into the /models volume
# (HF_HOME); later starts, with the same volume, load them from there. Catalog models
# copied or fetched into /models/NAME/ (TARJAMA_MODELS_DIR; `tarjama models fetch NAME
# --dir /models`) are loaded from there without the hub. Health:
# grpc.health.v1.Health on port 50051 (NOT_SERVING until the models are loaded). There is
# no HEALTHCHECK: Kubernetes >= 1.24 probes gRPC natively (deploy/kubernetes), so the image
# carries no grpc_health_probe binary. `docker stop -t 180` gives calls in flight time to
# finish.

# ---- build ----------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, against stub sources, so this layer is reused until Cargo.toml or
# Cargo.lock change. protoc comes from the protoc-bin-vendored crate (build.rs); the
# stubs never include the generated code, but build.rs needs the proto files.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/tokenizer.rs \
    && cargo build --release --locked --bin tarjama \
    && rm -rf src

# The crate itself. touch: COPY keeps the files' times, which may be older than the stub
# build, and cargo would then keep the stub binary.
COPY src ./src
# The benchmark configurations, workload and text, and the model catalog, are built into
# the binary.
COPY bench/opus-mt-ar-en.config.json bench/opus-mt-tc-big-ar-en.config.json bench/workload.json \
    bench/en-news.txt ./bench/
COPY models/catalog.toml ./models/
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin tarjama \
    && strip target/release/tarjama

# ---- run ------------------------------------------------------------------------------
FROM debian:bookworm-slim

# CA roots for the hub's HTTPS; the binary needs only libc, libm and libgcc_s besides.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid (10001), matched by runAsUser/fsGroup in deploy/kubernetes.
RUN groupadd --system --gid 10001 tarjama \
    && useradd --system --uid 10001 --gid 10001 --home-dir /models --no-create-home \
        --shell /usr/sbin/nologin tarjama \
    && mkdir -p /models \
    && chown 10001:10001 /models

COPY --from=builder /src/target/release/tarjama /usr/local/bin/tarjama

# HF_HOME: the Hugging Face cache lives under /models/hub; catalog model folders under
# /models/NAME/. Listen on all interfaces in the container; metrics on a separate
# plain-HTTP port.
ENV HF_HOME=/models \
    TARJAMA_MODELS_DIR=/models \
    TARJAMA_LISTEN=0.0.0.0:50051 \
    TARJAMA_METRICS_ADDR=0.0.0.0:9090 \
    TARJAMA_HEALTH_ADDR=0.0.0.0:50052

# Declared after the chown so a new named volume starts out owned by uid 10001.
VOLUME ["/models"]
USER 10001:10001
EXPOSE 50051 50052 9090

# tarjama is PID 1 and handles SIGTERM itself: health turns NOT_SERVING, new calls are
# refused, calls in flight finish, exit 0.
ENTRYPOINT ["tarjama"]
CMD ["serve"]
