# texprod developer and operator commands. `make install` then `make test` on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# CPU build by default (a local wheel here; an unpinned torch pulls GBs of CUDA packages).
# On a CUDA machine: make install TORCH=torch==2.13.0 TORCH_INDEX=<your CUDA wheel index>
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

# the GPU check: DEVICE=cpu is its dry run here (tiny sizes); on the lent GPU machine the
# system python3 runs it with the wheels of `make gpu-wheels` (README "The GPU check")
DEVICE ?= cuda
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)

.PHONY: gpu-check gpu-record gpu-wheels golden install lock test bench generate lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip

install: $(PY)
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -c "import torch, pyvips, texprod; print('texprod', texprod.__version__, \
	  '| torch', torch.__version__, '| CUDA', torch.cuda.is_available(), \
	  '| libvips', pyvips.version(0), pyvips.version(1), sep=' ')"

# Re-resolve every dependency at its newest allowed release into constraints.txt (what
# `make install` installs); then `make install test` and commit it with the passing run
lock: $(PY)
	$(PY) scripts/lock_dependencies.py --torch "$(TORCH)"

test: $(PY)
	$(PY) -m pytest -q

bench: $(PY)
	$(PY) bench/bench_render.py
	$(PY) bench/bench_export.py
	$(PY) bench/bench_colour.py
	$(PY) bench/bench_pdf.py
	$(PY) bench/bench_finish.py
	$(PY) bench/bench_job.py
	$(PY) bench/bench_scale.py
	$(PY) bench/bench_train.py

gpu-wheels: $(PY)
	$(PY) bench/gpu_wheels.py

gpu-check:
	$(GPU_PY) bench/gpu_check.py --device $(DEVICE)

# after a GPU check: make gpu-record DIR=<the $$OUT that came back> (BENCHMARKS.md, estimates)
gpu-record: $(PY)
	@test -n "$(DIR)" || { echo "usage: make gpu-record DIR=<folder with gpu-check.json>"; exit 2; }
	$(PY) bench/record_gpu_check.py $(DIR)

# record the shipped specs' print files on this CPU, after a change meant to alter them
golden: $(PY)
	$(PY) -m tests.golden.shipped

# make generate SPEC=box_packaging.yaml  (a path, or a name in specs/); ARGS="--dry-run"
generate: $(PY)
	@test -n "$(SPEC)" || { echo "usage: make generate SPEC=box_packaging.yaml [ARGS=...]"; exit 2; }
	$(VENV)/bin/texprod generate $(SPEC) $(ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out scratch .pytest_cache build *.egg-info

# --- Operating: Prefect server, workers, deployments, self-hosted stack (README: "Operating texprod")
PREFECT := $(VENV)/bin/prefect
COMPOSE ?= docker compose
STACK := $(COMPOSE) -f infra/docker-compose.yml --env-file infra/.env
HOST ?= 127.0.0.1
PORT ?= 4200
# Refuse to run a worker or deploy against Prefect's throwaway ephemeral API.
NEED_API = @$(PY) -c "import sys; from prefect.settings import get_current_settings as s; \
  sys.exit(0 if s().api.url else 'PREFECT_API_URL is not set: run make server, then export PREFECT_API_URL=http://$(HOST):$(PORT)/api')"

.PHONY: server server-objects worker deploy buckets alerts up down system-packages install-ci

# The address the UI (in the operator's browser) calls the API at: the server's own, unless
# it listens on all interfaces (then the host name; set UI_API_URL for a proxy or other name).
# Without /api it is the UI's address, which the server puts in alerts' links to a run.
UI_HOST = $(if $(filter 0.0.0.0 ::,$(HOST)),$(shell hostname -f),$(HOST))
UI_API_URL ?= http://$(UI_HOST):$(PORT)/api
# GPUs that may render at once across all deployments (the texprod-gpu concurrency limit)
GPU_SLOTS ?= 1
GPU_LIMIT ?= texprod-gpu
# A worker's flow runs send a heartbeat every HEARTBEAT_S; a texprod run silent for
# UNRESPONSIVE_S (its host died) is marked Crashed (flows/unresponsive.py)
HEARTBEAT_S ?= 60
UNRESPONSIVE_S ?= 600

# Local Prefect server with the UI at http://$(HOST):$(PORT) (SQLite under ~/.prefect); Ctrl-C stops it.
# --port alone leaves the UI calling :4200: the API and UI settings get the port too.
server: $(PY)
	PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_API_HOST=$(HOST) \
	  PREFECT_SERVER_API_PORT=$(PORT) PREFECT_UI_API_URL=$(UI_API_URL) \
	  PREFECT_UI_URL=$(UI_API_URL:/api=) $(PREFECT) server start --host $(HOST) --port $(PORT)

# What deployments and workers need on the server, created when missing (idempotent):
# the process work pool `gpu`, the global concurrency limit the flow holds while rendering,
# and the automation that marks Crashed a run whose host died
server-objects: $(PY)
	$(NEED_API)
	$(PY) -m flows.unresponsive --after "$(UNRESPONSIVE_S)"
	$(PREFECT) work-pool inspect gpu >/dev/null 2>&1 || $(PREFECT) work-pool create gpu --type process
	$(PREFECT) gcl inspect $(GPU_LIMIT) >/dev/null 2>&1 || $(PREFECT) gcl create $(GPU_LIMIT) --limit $(GPU_SLOTS)

# Process worker on pool `gpu` (created if missing), one run at a time; GPU=N pins it to one GPU
worker: server-objects
	TEXPROD_HOME=$(CURDIR) PREFECT_FLOWS_HEARTBEAT_FREQUENCY=$(HEARTBEAT_S) \
	  $(if $(GPU),CUDA_VISIBLE_DEVICES=$(GPU)) $(PREFECT) worker start --pool gpu --limit 1 $(if $(GPU),--name $(shell hostname)-gpu$(GPU))

# Create or update every deployment in infra/prefect.yaml (schedules arrive inactive);
# first saves the server objects above (pool, GPU limit, dead-run automation)
deploy: server-objects
	env -u TEXPROD_HOME $(PREFECT) --no-prompt deploy --all --prefect-file infra/prefect.yaml

# The buckets this README uses (texprod-models, texprod-outputs) on the S3 server that
# AWS_ENDPOINT_URL names (MinIO, moto, ...), created when missing; BUCKETS="a b" for others
BUCKETS ?= texprod-models texprod-outputs
buckets: $(PY)
	$(PY) scripts/create_buckets.py $(BUCKETS)

# Failed or crashed texprod runs, and runs still Late ALERT_LATE_S after Prefect marked them
# (no worker took them), post to a webhook (Slack, Mattermost, ...), sent by the Prefect
# server: make alerts ALERT_URL=https://hooks.slack.com/services/...
ALERT_LATE_S ?= 600
alerts: $(PY)
	$(NEED_API)
	@test -n "$(ALERT_URL)" || { echo "make alerts ALERT_URL=https://... (the webhook to post to)"; exit 2; }
	$(PY) -m flows.alerts "$(ALERT_URL)" --late-after "$(ALERT_LATE_S)"

# Debian packages the tests use (run as root): Chromium for the dashboard test (Playwright
# drives this binary, it never downloads a browser), Ghostscript and libtiff's tiffinfo as
# independent readers of the outputs
SYSTEM_PACKAGES = chromium ghostscript libtiff-tools
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# what CI does before the tests (as root): the system packages, then the Python install
install-ci: system-packages install

# Start the self-hosted stack (Postgres, Prefect server, MinIO + buckets, GPU worker) from infra/.env
up:
	@test -f infra/.env || { echo "cp infra/.env.example infra/.env and set its passwords first"; exit 2; }
	$(STACK) up -d --build

# Stop the self-hosted stack; volumes are kept (ARGS=-v deletes them: database, buckets, outputs)
down:
	$(STACK) down $(ARGS)
