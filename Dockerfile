# syntax=docker/dockerfile:1
# vocoderd container image (docs/deploy.md).
#
#   docker build -t vocoderd:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#
# The build stage runs the README's own scripts/deps and scripts/build, so
# there is no second build recipe to drift. The runtime stage carries only
# what a pod runs: vocoderd, vocoder-client, vocoder-bench, vocoder-loadgen
# (load tests from inside the cluster, docs/benchmarks.md), the export tool
# with the project virtualenv (torch, which also provides LibTorch and the
# CUDA libraries it needs) and the shared libraries the binaries link.
#
# Both stages use /opt/vocoderd: the binaries' RUNPATH points at the
# virtualenv's torch/lib by absolute path, and the venv's interpreter is
# /usr/bin/python3 of the same Ubuntu release, so nothing is relocated.
ARG CUDA_VERSION=13.0.2
ARG BASE_OS=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-${BASE_OS} AS build
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Only what scripts/deps needs to start; it installs the build packages itself.
# Apt versions are not pinned (DL3008): the archive drops superseded versions,
# so pins break rebuilds; the base image tag fixes the release, and
# scripts/deps installs unpinned as on a workstation.
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends ca-certificates python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/vocoderd
COPY . .
# The pip and ccache caches survive between builds (BuildKit cache mounts);
# the torch wheel alone is about 3 GB. Only the shipped targets are built.
RUN --mount=type=cache,target=/root/.cache \
    CCACHE_DIR=/root/.cache/ccache scripts/deps \
    && CCACHE_DIR=/root/.cache/ccache scripts/build release \
      --target vocoderd vocoder-client vocoder-bench vocoder-loadgen \
    && deploy/docker/runtime-libs collect /opt/vocoderd/runtime-libs \
      build/release/server/vocoderd build/release/tools/client/vocoder-client \
      build/release/tools/bench/vocoder-bench build/release/tools/loadgen/vocoder-loadgen

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${BASE_OS} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="vocoderd" \
      org.opencontainers.image.description="Streaming S3Gen vocoder over gRPC, batched on one GPU" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/deploy.md"
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# python3 is the virtualenv's interpreter (export tool, health probe, fetch).
# The user's home is /tmp: the pod's root filesystem is read-only and /tmp
# is an emptyDir there. Unpinned apt versions: see the build stage.
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 vocoder \
    && useradd --system --uid 10001 --gid vocoder --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin vocoder
COPY --from=build /opt/vocoderd/.venv /opt/vocoderd/.venv
COPY --from=build /opt/vocoderd/build/release/server/vocoderd \
     /opt/vocoderd/build/release/tools/client/vocoder-client \
     /opt/vocoderd/build/release/tools/bench/vocoder-bench \
     /opt/vocoderd/build/release/tools/loadgen/vocoder-loadgen \
     /opt/vocoderd/deploy/docker/export-model \
     /opt/vocoderd/deploy/docker/fetch-checkpoint \
     /opt/vocoderd/deploy/docker/grpc-health-check \
     /opt/vocoderd/deploy/docker/runtime-libs /opt/vocoderd/bin/
COPY --from=build /opt/vocoderd/tools/export_s3gen.py /opt/vocoderd/tools/
COPY --from=build /opt/vocoderd/tools/s3gen /opt/vocoderd/tools/s3gen
# Libraries the runtime base lacks (gRPC, protobuf, Abseil, prometheus-cpp,
# c-ares, re2, ...) go to /opt/vocoderd/lib, read through a bind mount of the
# build stage; the build fails here, not in a pod, if any library of a
# shipped binary does not resolve.
RUN --mount=type=bind,from=build,source=/opt/vocoderd/runtime-libs,target=/tmp/runtime-libs \
    /opt/vocoderd/bin/runtime-libs install /tmp/runtime-libs /opt/vocoderd/lib \
    && /opt/vocoderd/bin/runtime-libs check /opt/vocoderd/bin/vocoderd \
      /opt/vocoderd/bin/vocoder-client /opt/vocoderd/bin/vocoder-bench \
      /opt/vocoderd/bin/vocoder-loadgen \
    && /opt/vocoderd/bin/vocoderd --print-config >/dev/null \
    && mkdir -p /models && chown 10001:10001 /models
ENV PATH=/opt/vocoderd/bin:/opt/vocoderd/.venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VOCODERD_MODEL_DIR=/models/s3gen
WORKDIR /opt/vocoderd
# The model directory (manifest.json, traced modules, voices/): exported by
# the export-model init container on Kubernetes, or mounted with docker -v.
VOLUME ["/models"]
EXPOSE 50051 9464
USER 10001:10001
# vocoderd drains on SIGTERM itself and starts no children: no init needed.
ENTRYPOINT ["/opt/vocoderd/bin/vocoderd"]
