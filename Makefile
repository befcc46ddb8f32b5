# texprod developer and operator commands. `make install` then `make test` on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# CPU build by default (a local wheel here; an unpinned torch pulls GBs of CUDA packages).
# On a CUDA machine: make install TORCH=torch==2.13.0 TORCH_INDEX=<your CUDA wheel index>
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install test bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip

install: $(PY)
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import torch, pyvips, texprod; print('texprod', texprod.__version__, \
	  '| torch', torch.__version__, '| CUDA', torch.cuda.is_available(), \
	  '| libvips', pyvips.version(0), pyvips.version(1), sep=' ')"

test: $(PY)
	$(PY) -m pytest -q

bench: $(PY)
	$(PY) bench/bench_render.py

lint: $(PY)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out scratch .pytest_cache build *.egg-info
