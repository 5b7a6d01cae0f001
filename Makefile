# gancodec — every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
STEPS ?= 8000
export TF_CPP_MIN_LOG_LEVEL := 2
DATA_airplane := cifar10_airplane
DATA_automobile := cifar10_automobile
DATA_flowers := flowers64

.PHONY: install browser test test-fast demo lint train-% export-% export-all check-models bench bench-rd bench-table bench-speed bench-effort fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,demo,bench,dev]'
	touch $(STAMP)

# Debian's Chromium for the browser test (no browser download by any Python package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium' (browser test will be skipped)"; fi; }

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser"

demo: install
	$(VENV)/bin/streamlit run demo/app.py --server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer

lint: install
	$(VENV)/bin/ruff check .

# Training runs used for the shipped bundles (reconstruction-aware mode, 32x32, latent 128).
train-airplane: install
	$(PY) -m training.train --data $(DATA)/cifar10_airplane.npz --out runs/airplane --steps $(STEPS) $(if $(wildcard runs/airplane/config.json),--resume)
train-automobile: install
	$(PY) -m training.train --data $(DATA)/cifar10_automobile.npz --out runs/automobile --steps $(STEPS) $(if $(wildcard runs/automobile/config.json),--resume)
train-flowers: install
	$(PY) -m training.train --data $(DATA)/flowers64.npz --out runs/flowers --steps $(STEPS) $(if $(wildcard runs/flowers/config.json),--resume)
train-%-256: install
	$(PY) -m training.train --data $(DATA)/$(DATA_$*).npz --out runs/$*-256 --latent-dim 256 --steps 4000 $(if $(wildcard runs/$*-256/config.json),--resume)
train-airplane-gan: install
	$(PY) -m training.train --mode gan --data $(DATA)/cifar10_airplane.npz --out runs/airplane-gan --steps $(STEPS) $(if $(wildcard runs/airplane-gan/config.json),--resume)

export-%: install
	$(PY) -m export.onnx runs/$* --out models/$* --overwrite

export-all: export-airplane export-automobile export-flowers export-airplane-256 export-automobile-256 export-flowers-256

check-models: install
	for m in models/*/; do $(PY) -m export.check $$m || exit 1; done

bench-rd: install
	for m in airplane automobile flowers airplane-256 automobile-256 flowers-256; do \
	  d=$$(case $$m in airplane*) echo cifar10_airplane;; automobile*) echo cifar10_automobile;; flowers*) echo flowers64;; esac); \
	  $(PY) -m benchmarks.rd --model models/$$m --data $(DATA)/$$d.npz --split val --limit 200 || exit 1; done
bench-table: install
	$(PY) -m benchmarks.table --data-dir $(DATA)
bench-effort: install
	$(PY) -m benchmarks.effort --model models/airplane --data $(DATA)/cifar10_airplane.npz --limit 64
bench-speed: install
	$(PY) -m benchmarks.speed
bench: bench-table bench-rd bench-speed bench-effort
	$(PY) -m benchmarks.readme

fuzz: install
	$(PY) -m benchmarks.fuzz --seconds 120

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
