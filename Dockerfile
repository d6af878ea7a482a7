# vocoderd image. Builds exactly as the README does (scripts/deps, then
# scripts/build), so there is no second build recipe.
#   docker build -t vocoderd .
# The deployment issue adds the runtime hardening and Kubernetes wiring; this
# file has not been built here (no Docker engine on the development machines).

FROM nvidia/cuda:13.0.0-devel-ubuntu24.04 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      ca-certificates git python3 python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/deps && scripts/build release

FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04 AS runtime
LABEL org.opencontainers.image.title="vocoderd" \
      org.opencontainers.image.description="Streaming S3Gen vocoder over gRPC"
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51t64 libprotobuf32t64 libprometheus-cpp-pull1.0 python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home vocoder
COPY --from=build /src/.venv /opt/vocoderd/.venv
COPY --from=build /src/build/release/tools/bench/vocoder-bench /opt/vocoderd/bin/
ENV PATH=/opt/vocoderd/bin:$PATH \
    LD_LIBRARY_PATH=/opt/vocoderd/.venv/lib/python3.12/site-packages/torch/lib
VOLUME ["/models"]
USER 10001
ENTRYPOINT ["vocoder-bench"]
CMD ["batcher"]
