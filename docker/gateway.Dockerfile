# syntax=docker/dockerfile:1.7
# lm-saes gateway (`python -m gateway`): HTTP API + web UI in front of the gRPC services, CPU only.
# Build from the repository root (or `make images`):
#   docker build -f docker/gateway.Dockerfile -t lm-saes/gateway:0.1.0 .                        # with the UI
#   docker build -f docker/gateway.Dockerfile --build-arg UI=no-frontend -t lm-saes/gateway:0.1.0 .
# UI=no-frontend (what `make images` picks without frontend/package.json) skips the node stage
# (BuildKit builds only the stages the target needs).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:22.21.1-bookworm-slim
ARG UI=frontend

# The web UI, built with node from the committed lock file.
FROM ${NODE_IMAGE} AS frontend
WORKDIR /frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

# No UI: an empty folder in its place.
FROM ${PYTHON_IMAGE} AS no-frontend
RUN mkdir -p /frontend/dist

FROM ${UI} AS ui

# A virtual environment with the CPU build of torch (the gRPC client decodes tensors with it) and
# the pinned runtime and gateway dependencies.
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url ${TORCH_INDEX} "torch==${TORCH_VERSION}"
COPY docker/requirements.lock docker/requirements-gateway.lock /src/docker/
RUN pip install -r /src/docker/requirements.lock -r /src/docker/requirements-gateway.lock
COPY pyproject.toml README.md /src/
COPY lm_saes /src/lm_saes
COPY services /src/services
COPY gateway /src/gateway
RUN pip install --no-deps /src

# Slim runtime: the venv, the gateway package and the built UI only.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="lm-saes-gateway" \
      org.opencontainers.image.description="lm-saes gateway: HTTP API and web UI" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 lmsaes \
 && useradd --uid 10001 --gid 10001 --home-dir /home/lmsaes --create-home --shell /usr/sbin/nologin lmsaes
COPY --from=builder /opt/venv /opt/venv
# `python -m gateway` runs from /app (the package is not part of the lm-saes wheel).
COPY --from=builder /src/gateway /app/gateway
COPY --from=ui /frontend/dist /opt/frontend
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LM_SAES_HOST=0.0.0.0 \
    LM_SAES_GATEWAY_HOST=0.0.0.0 \
    LM_SAES_GATEWAY_PORT=8000 \
    LM_SAES_STATIC_DIR=/opt/frontend
WORKDIR /app
USER 10001:10001
# HTTP API, UI and Prometheus /metrics all on one port.
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; reply = urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LM_SAES_GATEWAY_PORT', '8000') + '/healthz', timeout=4); sys.exit(0 if reply.status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "gateway"]
