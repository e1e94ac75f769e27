# A fedrag-serve silo node: the data owner's private index behind the signed API.
# The image holds no LLM stack; the silo directory, keys and membership file are volumes.
#
#   docker build -f deploy/silo.Dockerfile -t fedrag-silo .
#   (see README "Running a silo in a container" for the docker run line)
FROM python:3.11-slim

# Extra pip arguments for torch, e.g. --build-arg TORCH_PIP_ARGS="torch==2.13.0 --index-url <your CPU wheel index>"
ARG TORCH_PIP_ARGS="torch==2.13.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    FEDRAG_HEALTH_URL=http://127.0.0.1:8443/healthz

# torch first and pinned, so the encoder's dependencies do not pull another build.
RUN pip install ${TORCH_PIP_ARGS}

WORKDIR /opt/fedrag
COPY pyproject.toml README.md ./
COPY federation ./federation
COPY silo_node ./silo_node
RUN pip install '.[silo]'

RUN useradd --system --uid 10001 --home-dir /silo fedrag
USER fedrag
VOLUME ["/silo"]
EXPOSE 8443
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['FEDRAG_HEALTH_URL'], timeout=4, context=ssl._create_unverified_context())"
ENTRYPOINT ["fedrag"]
CMD ["silo", "serve", "/silo", "--host", "0.0.0.0", "--port", "8443"]
