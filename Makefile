# mnistbench: `make bench-cpu` runs the CPU comparison, `make test` runs the tests.
# Each target installs what it needs into .venv first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPEC_CPU ?= bench/cpu.yaml
SPEC_GPU ?= bench/gpu.yaml
SPEC   ?=
# Extra arguments for `mnistbench run`, e.g. ARGS=--force
ARGS   ?=
# DOCKER=auto (use an engine when one answers) | yes | no
DOCKER ?= auto
export DOCKER

.PHONY: help install test lint bench-cpu bench-gpu bench-smoke bench-micro bench-scale-cpu report clean

help:
	@echo "make install      create $(VENV) and install mnistbench with dev extras"
	@echo "make test         run the test suite (installs first)"
	@echo "make bench-cpu    run $(SPEC_CPU) on the CPU (SPEC=bench/x.yaml for another spec)"
	@echo "make bench-gpu    run $(SPEC_GPU) on a CUDA GPU"
	@echo "make bench-smoke  a seconds-long end-to-end check"
	@echo "make bench-micro  pytest-benchmark micro-benchmarks, compared with the last saved run"
	@echo "make bench-scale-cpu  bench/scale-cpu.yaml sequentially and on Ray, compared (docs/scale-out.md)"
	@echo "make lint         hadolint on the Dockerfiles"

install: $(VENV)/.installed

# Re-install only when the package metadata changes; the install is editable.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

test: install lint
	$(BIN)/pytest -q

lint: install
	$(BIN)/hadolint --failure-threshold warning docker/cpu.Dockerfile docker/cuda.Dockerfile

# In a container when a Docker engine answers (README, "Containers"), else natively; only the
# native run needs $(VENV), so the script installs it (INSTALL) when it falls back.
BENCH_INSTALL = $(MAKE) --no-print-directory -s install

bench-cpu:
	@INSTALL='$(BENCH_INSTALL)' scripts/bench.sh cpu $(or $(SPEC),$(SPEC_CPU)) $(ARGS)

bench-gpu:
	@INSTALL='$(BENCH_INSTALL)' scripts/bench.sh gpu $(or $(SPEC),$(SPEC_GPU)) $(ARGS)

bench-smoke: install
	$(BIN)/mnistbench run bench/smoke.yaml

# Saved under .benchmarks/ and compared with the last saved run (README, "Micro-benchmarks"); about 10 s on 2 idle CPU cores.
bench-micro: install
	$(BIN)/pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-autosave --benchmark-compare -q \
		--benchmark-warmup=on --benchmark-warmup-iterations=10 --benchmark-min-rounds=5 --benchmark-max-time=0.25 \
		--benchmark-columns=min,median,mean,stddev,ops,rounds

# Sequential vs --engine ray, tables compared and wall times written to results/scale-cpu/comparison.md
# (docs/scale-out.md); about 5 minutes on 2 idle cores. Nothing else should run meanwhile.
bench-scale-cpu: install
	$(BIN)/python scripts/scale_compare.py bench/scale-cpu.yaml results/scale-cpu

report: install
	$(BIN)/mnistbench report $(or $(DIR),results/cpu)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
