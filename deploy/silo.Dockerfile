# A fedrag-serve silo node: the data owner's private index behind the signed API.
# The image holds no LLM stack; the silo directory, keys and membership file live in the volume
# /srv/fedrag (README "Running a silo in a container").
#
#   docker build -f deploy/silo.Dockerfile -t fedrag-silo .
#   make images          (podman, with a locally built Debian base: deploy/images.sh)
ARG BASE=python:3.11-slim

# hnswlib is published as source only: compile its wheel here, keep the compiler out of the image.
FROM ${BASE} AS hnswlib
ARG PIP_CERT
RUN apt-get update && apt-get install -y --no-install-recommends build-essential python3-dev \
    && python3 -m venv /opt/build && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels "hnswlib>=0.8"

FROM ${BASE}

# torch first and pinned (a CPU build), so the encoder's dependencies do not pull a CUDA build.
ARG TORCH_PIP_ARGS="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# The extras installed: the OpenVINO encoder backend too (federation init --encoder-backend openvino).
ARG EXTRAS="silo,openvino"
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
    FEDRAG_CACHE_DIR=/var/cache/fedrag \
    FEDRAG_HEALTH_URL=http://127.0.0.1:8443/healthz

# A virtual environment: the same steps on python:3.11-slim and on Debian's own python3.
RUN python3 -m venv /opt/venv && pip install ${TORCH_PIP_ARGS}

WORKDIR /opt/fedrag
COPY pyproject.toml README.md ./
COPY federation ./federation
COPY silo_node ./silo_node
COPY --from=hnswlib /wheels /opt/wheels-built
RUN pip install --find-links /opt/wheels-built ".[${EXTRAS}]" && rm -rf /opt/wheels-built

RUN useradd --system --uid 10001 --user-group --home-dir /srv/fedrag --no-create-home fedrag \
    && install -d -o 10001 -g 10001 /srv/fedrag /var/cache/fedrag
USER 10001
VOLUME ["/srv/fedrag"]
EXPOSE 8443
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['FEDRAG_HEALTH_URL'], timeout=4, context=ssl._create_unverified_context())"
ENTRYPOINT ["fedrag"]
CMD ["silo", "serve", "/srv/fedrag/silo", "--host", "0.0.0.0", "--port", "8443"]
