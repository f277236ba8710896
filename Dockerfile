# syntax=docker/dockerfile:1.7
# One image for every Python process of AITrader: mock_mcp, pattern_engine, strategy_engine,
# execution, the API (backend.api), the job workers (backend.jobs.worker), migrations (alembic)
# and the `aitrader` CLI. The compose files pick the process with `command:` (docs/deployment.md).
#
#   docker build -t aitrader:latest .                                   # CPU (python:3.11-slim)
#   docker build -t aitrader:gpu --build-arg VARIANT=gpu --build-arg EXTRAS=gpu .   # CUDA 12 + TensorRT 10
#
# Two stages per variant: `build` compiles wheels with a toolchain (and, for gpu, the CUDA headers
# pycuda needs) into /opt/venv; `runtime` copies only the venv and the source tree, runs as an
# unprivileged user and keeps its state under /var/lib/aitrader (a volume in compose).
# The project is installed editable at /app, so the config/ and alembic/ folders the settings
# default to (paths relative to the checkout) are where the code expects them.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---- build bases ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_DEVEL_IMAGE} AS build-gpu
# Ubuntu 24.04's Python is 3.12 (the project needs >= 3.11); nvcc and the CUDA headers build pycuda.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /usr/bin/python3 /usr/local/bin/python
ENV PATH=/usr/local/cuda/bin:$PATH

# ---- build: the venv with the project and its dependencies -----------------------------------
FROM build-${VARIANT} AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY common/ common/
COPY tick_replay/ tick_replay/
COPY pattern_engine/ pattern_engine/
COPY strategy_engine/ strategy_engine/
COPY execution/ execution/
COPY mock_mcp/ mock_mcp/
COPY backend/ backend/
COPY alembic/ alembic/
COPY config/ config/
COPY scripts/ scripts/
# With the gpu extra: onnxruntime-gpu and onnxruntime install the same module, keep only the GPU build
# (docs/gpu.md). Then every service is imported once, so an image that cannot start one fails to build.
RUN pip install --upgrade pip setuptools wheel \
 && pip install -e ".${EXTRAS:+[$EXTRAS]}" \
 && if echo ",${EXTRAS}," | grep -q ",gpu,"; then \
      pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu; \
    fi \
 && python -c "import common, pattern_engine, backend.api, backend.jobs.worker, mock_mcp, execution, strategy_engine"

# ---- runtime bases ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-cpu

FROM ${CUDA_RUNTIME_IMAGE} AS runtime-gpu
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /usr/bin/python3 /usr/local/bin/python

# ---- runtime ----------------------------------------------------------------------------------
FROM runtime-${VARIANT} AS runtime
LABEL org.opencontainers.image.title="aitrader" \
      org.opencontainers.image.description="AITrader services, API, job worker and CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
# Every folder compose mounts a named volume on exists here, owned by the user: an empty volume takes
# the image's ownership (a folder missing from the image would be created root-owned, unwritable).
RUN groupadd --system --gid 10001 aitrader \
 && useradd --system --uid 10001 --gid aitrader --home-dir /var/lib/aitrader --shell /usr/sbin/nologin aitrader \
 && mkdir -p /var/lib/aitrader /var/cache/aitrader/numba /var/cache/aitrader/tensorrt \
 && chown -R aitrader:aitrader /var/lib/aitrader /var/cache/aitrader
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# NUMBA_CACHE_DIR: the feature kernels' compiled cache (the source tree is read-only to the user).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/var/cache/aitrader/numba \
    AITRADER_HOME=/var/lib/aitrader
WORKDIR /app
USER aitrader
# The API by default; compose gives each service its command (python -m <module>).
EXPOSE 8000
CMD ["python", "-m", "backend.api"]
