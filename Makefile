# gancodec — every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
STEPS ?= 8000
export TF_CPP_MIN_LOG_LEVEL := 2
# The browser decoder (demo/web/): onnxruntime-web from npm, pinned in demo/web/package(-lock).json.
WEB_NPM := build/web-npm
ORT_DIST := $(WEB_NPM)/node_modules/onnxruntime-web/dist
WEB_MODELS ?= airplane automobile flowers
WEB_PORT ?= 8000
DATA_airplane := cifar10_airplane
DATA_automobile := cifar10_automobile
DATA_flowers := flowers64

.PHONY: install browser web-runtime web web-demo test test-fast demo lint train-% finetune-% recipe-% tables-% bench-tables bench-tables-% export-% export-all check-models bench bench-rd bench-table bench-speed bench-effort bench-aarch64 bench-train-speed fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,demo,bench,dev,gpu]'
	touch $(STAMP)

# Debian's Chromium for the browser test (no browser download by any Python package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium' (browser test will be skipped)"; fi; }

# onnxruntime-web for the page: npm ci into build/ (git-ignored), then copy the 3 files the page loads
# into demo/web/ort/ (git-ignored). Reinstalls only when the lock file changes.
web-runtime: install
	@if ! cmp -s demo/web/package-lock.json $(WEB_NPM)/package-lock.json || [ ! -f $(ORT_DIST)/ort.wasm.min.mjs ]; then \
	  mkdir -p $(WEB_NPM) && cp demo/web/package.json demo/web/package-lock.json $(WEB_NPM)/ && \
	  (cd $(WEB_NPM) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) || exit 1; fi
	$(PY) -m export.web --runtime $(ORT_DIST)

# The static page with the shipped models exported under demo/web/models/ (git-ignored).
web: web-runtime
	$(PY) -m export.web $(addprefix models/,$(WEB_MODELS))

web-demo: web
	@echo "serving demo/web/ on http://localhost:$(WEB_PORT)/  (?model=NAME picks a model; Ctrl-C stops)"
	$(PY) -m http.server $(WEB_PORT) --bind 127.0.0.1 --directory demo/web

# The browser decoder's tests need onnxruntime-web from npm; without npm they are skipped.
test: install browser $(if $(shell command -v npm),web-runtime)
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser"

demo: install
	$(VENV)/bin/streamlit run demo/app.py --server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer

lint: install
	$(VENV)/bin/ruff check .

# Training runs behind the shipped bundles (rd mode: variable-rate RD GAN codec, 32x32, the GDN
# design with latent 4x4x64, 8 trained rate levels). They resume automatically; RD_STEPS/BATCH/
# THREADS to change (runs/rd-* are the earlier conv design's runs).
RD_STEPS ?= 15000
BATCH ?= 32
THREADS ?= 1
train-airplane train-automobile train-flowers: train-%: install
	$(PY) -m training.train --data $(DATA)/$(DATA_$*).npz --out runs/gdn-$* --steps $(RD_STEPS) --batch $(BATCH) \
	  --eval-every 500 --eval-images 256 --ckpt-every 500 --threads $(THREADS) $(if $(wildcard runs/gdn-$*/config.json),--resume)
# Continued training of a shipped bundle (the bundles are the hand-over between sessions: a run's
# checkpoints do not outlive its machine): a new run started from models/NAME's weights, gains and
# density, at a lower learning rate. `make export-NAME RUN=ft` ships it.
# Earlier rounds, at a smaller adversarial weight (--w-adv-rd 2): three cosine cycles, 12000 steps,
# then twice 4000 more (`FT_STEPS=4000`), each from the previous cycle's exported bundle (curves:
# docs/training/*_ft2*). The last round trains the rate under the coder's 8 entropy contexts
# (--rate-contexts 8): automobile one 8000-step cycle (`FT_STEPS=8000`), flowers one of 4000; airplane one 9000-step
# cycle that also added a residual block to its encoder and generator (curves: *_ctx*, *_blk*).
# Then one GPU cycle each (training/gpu.py, a PyTorch copy of the trainer since replaced by Keras's torch backend): airplane 23,484 steps, automobile 23,999 (adding a
# residual block to its encoder and generator), flowers 7,865; batch 64, lr 1e-4 (curves: *_gpu*);
# then airplane and automobile one more cycle of the same trainer on this CPU (`training.gpu train
# --device cpu --threads 1 --batch 32 --seconds 4500`: 14,623 / 14,621 steps; curves: *_cpu_*), and one
# more the same way (`--seconds 5100` / `5700`; curves: *_cpu2_*), and a third (`--seconds 6600` /
# `4450`: 18,601 / 13,434 steps; curves: *_cpu3_*), and a fourth at a lower peak rate (`--seconds 6600
# --lr 5e-5`: 17,266 / 17,427 steps; curves: *_cpu4_*); airplane a fifth on both cores (`--threads 2
# --seconds 6300 --lr 5e-5`: 35,135 steps; curves: *_cpu5_*), and a sixth with the copying fix and
# the warm-up (`--seconds 1440`: 8,385 steps, score 2.2385 -> 2.1785; curves: *_cpu6_*).
# A bundle is continued with the flags it was trained with (they are in FT_ARGS).
FT_STEPS ?= 12000
FT_LR ?= 1e-4
FT_ARGS := --w-adv-rd 2 --rate-contexts 8
FT_ARGS_airplane := --lam-max 0.4 --rd-g-blocks 1 --rd-e-blocks 1
FT_ARGS_automobile := --rd-g-blocks 1 --rd-e-blocks 1
finetune-airplane finetune-automobile finetune-flowers: finetune-%: install
	$(PY) -m training.train --data $(DATA)/$(DATA_$*).npz --out runs/ft-$* --steps $(FT_STEPS) --batch $(BATCH) \
	  --eval-every 500 --eval-images 256 --ckpt-every 500 --threads $(THREADS) --lr $(FT_LR) \
	  $(if $(wildcard runs/ft-$*/config.json),--resume,--init-from models/$* $(FT_ARGS) $(FT_ARGS_$*))
# Recipes (training/recipes/NAME.toml): a shipped bundle's whole training as one replayable run,
# from scratch, resumed where it stopped; `SECONDS=7200` scales its stages to a wall-clock budget;
# ends with the bundle in build/recipe-NAME. On a machine without TensorFlow (the GPU machine)
# the same command trains on Keras's PyTorch backend (`--backend torch`); its run directory
# (runs/recipe-NAME: config, ckpt/state.npz, best/) then comes back here for `export.onnx`.
recipe-%: install
	$(PY) -m training.train --recipe $* --out runs/recipe-$* --threads $(THREADS) $(if $(SECONDS),--seconds $(SECONDS)) \
	  $(if $(wildcard runs/recipe-$*/config.json),--resume) --export build/recipe-$* --overwrite
# Refit a shipped bundle's entropy tables in place (entropy.bin version 3, parametric; the
# networks stay): `make tables-NAME`, e.g. after changing the table format.
TABLE_DATA_airplane := $(DATA)/$(DATA_airplane).npz
TABLE_DATA_automobile := $(DATA)/$(DATA_automobile).npz
TABLE_DATA_flowers := $(DATA)/$(DATA_flowers).npz
TABLE_DATA_flowers128 := $(DATA)/flowers128
tables-%: install
	$(PY) -m export.tables models/$* --data $(TABLE_DATA_$*)
# flowers128: an any-size bundle, trained on random 64x64 crops of the 128x128 photos (validated and
# exported on whole images), warm-started from the 32x32 flowers bundle. The shipped one: 10,000 steps
# at batch 16 on both CPU cores (4.4 steps/s, ~38 min), stopped there by the session's clock.
FLOWERS128_ARGS := --crop --image-size 64 --batch 16 --lr 1e-4 --w-adv-rd 2 --rate-contexts 8 --lam-min 0.0001
train-flowers128: install
	$(PY) -m training.train --data $(DATA)/flowers128 --out runs/gdn-flowers128 --steps $(or $(F128_STEPS),24000) \
	  --eval-every 1000 --eval-images 64 --ckpt-every 500 --threads $(THREADS) \
	  $(if $(wildcard runs/gdn-flowers128/config.json),--resume,--init-from models/flowers $(FLOWERS128_ARGS))
# The version-3 entropy tables against each bundle's version-2 frequency lists (git revision 8fc7ef2)
TABLES_REV := 8fc7ef2
bench-tables-%: install
	@mkdir -p build && git show $(TABLES_REV):models/$*/entropy.bin > build/entropy_v2_$*.bin
	$(PY) -m benchmarks.tables --model models/$* --data $(TABLE_DATA_$*) --against build/entropy_v2_$*.bin --limit 200
bench-tables: bench-tables-airplane bench-tables-automobile bench-tables-flowers bench-tables-flowers128

bench-rd-flowers128: install
	$(PY) -m benchmarks.rd --model models/flowers128 --data $(DATA)/flowers128 --split val --limit 200 \
	  --budgets 300,500,800,1200,2000,3000 --levels none --no-progress
# The reference design (plain GAN, latent inversion), kept for comparison; it trains but does not export.
train-airplane-gan: install
	$(PY) -m training.train --mode gan --data $(DATA)/cifar10_airplane.npz --out runs/airplane-gan --steps $(STEPS) $(if $(wildcard runs/airplane-gan/config.json),--resume)

RUN ?= gdn
export-%: install
	$(PY) -m export.onnx runs/$(RUN)-$* --out models/$* --overwrite

export-all: export-airplane export-automobile export-flowers

check-models: install
	for m in models/*/; do $(PY) -m export.check $$m || exit 1; done

bench-rd: bench-rd-airplane bench-rd-automobile bench-rd-flowers
bench-rd-%: install
	$(PY) -m benchmarks.rd --model models/$* --data $(DATA)/$(DATA_$*).npz --split val --limit 200 --no-progress
bench-table: install
	$(PY) -m benchmarks.table --data-dir $(DATA) --no-progress
bench-effort: install
	$(PY) -m benchmarks.effort --model models/airplane --data $(DATA)/cifar10_airplane.npz --limit 64
# Issue #27: decoder and base encoder on aarch64 under qemu-user (a Debian arm64 root, built once; needs root).
bench-aarch64:
	bash benchmarks/aarch64.sh --data $(DATA)/cifar10_airplane.npz
# Issue #28: the one trainer's step on Keras's TensorFlow backend, its PyTorch backend and XLA, side by side;
# PyTorch comes with the gpu extra.
bench-train-speed: install
	$(PY) -m benchmarks.train_speed --init-from models/airplane --data $(DATA)/cifar10_airplane.npz --xla
bench-speed: install
	$(PY) -m benchmarks.speed --no-progress --data $(DATA)/cifar10_airplane.npz
	$(PY) -m benchmarks.speed --no-progress --model models/flowers128 --data $(DATA)/flowers128 --stem speed_flowers128
bench: bench-table bench-rd bench-speed bench-effort
	$(PY) -m benchmarks.readme

fuzz: install
	$(PY) -m benchmarks.fuzz --seconds 120

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info $(WEB_NPM) demo/web/ort demo/web/models demo/web/node_modules
