# syntax=docker/dockerfile:1
#
# pgshard and shardctl in one image. Build: docker build -t pgshard .
# (docker-compose.yml builds it for the test cluster).

# ---- build stage: cgo is required (pg_query_go compiles libpg_query with gcc,
# which the golang image ships). With CGO_ENABLED=0 the build fails with a
# misleading "undefined: pg_query.Parse".
FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=1

# Modules first: this layer is reused until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
# The first build compiles libpg_query (about 2 minutes); the Go build cache
# mount keeps it for later builds.
RUN --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out && \
    CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o /out/pgshard ./cmd/pgshard && \
    CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o /out/shardctl ./cmd/shardctl

# ---- runtime stage: same Debian release as the build stage (glibc).
FROM debian:bookworm-slim
# psql and pg_isready for healthchecks and bootstrap scripts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 pgshard \
 && useradd --system --uid 10001 --gid pgshard --create-home --home-dir /home/pgshard --shell /usr/sbin/nologin pgshard \
 && mkdir -p /etc/pgshard /home/pgshard/.pgshard \
 && ln -s /etc/pgshard/pgshard.yaml /home/pgshard/.pgshard/pgshard.yaml \
 && chown -R pgshard:pgshard /home/pgshard

COPY --from=build /out/pgshard /out/shardctl /usr/local/bin/
# A default config (the compose one); mount your own over it.
COPY deploy/pgshard.yaml /etc/pgshard/pgshard.yaml

USER pgshard:pgshard
# Both binaries default to .pgshard/pgshard.yaml: from here that is the
# symlink to /etc/pgshard/pgshard.yaml, so `shardctl map` needs no --config.
WORKDIR /home/pgshard
EXPOSE 6432
ENTRYPOINT ["/usr/local/bin/pgshard"]
CMD ["--config", "/etc/pgshard/pgshard.yaml"]
