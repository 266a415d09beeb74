# mnistbench: `make bench-cpu` runs the CPU comparison, `make test` runs the tests.
# Each target installs what it needs into .venv first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPEC_CPU ?= bench/cpu.yaml
SPEC_GPU ?= bench/gpu.yaml
SPEC_INFER ?= bench/infer-cpu.yaml
SPEC   ?=
# Extra arguments for `mnistbench run`, e.g. ARGS=--force
ARGS   ?=
# The version pins of native installs and both images (docs/containers.md); CONSTRAINTS= installs unpinned.
CONSTRAINTS ?= constraints.txt
# TORCH=cpu: PyTorch's CPU-only wheels from TORCH_CPU_INDEX (no CUDA libraries); TORCH=cuda: the ordinary
# index's build (on Linux with the CUDA libraries); auto (default): cpu when no NVIDIA GPU is seen (no
# nvidia-smi on PATH, no /dev/nvidia0), else cuda. It applies when .venv is made: make clean install TORCH=... switches.
TORCH ?= auto
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_BUILD = $(if $(filter auto,$(TORCH)),$(shell if command -v nvidia-smi >/dev/null 2>&1 || [ -e /dev/nvidia0 ]; then echo cuda; else echo cpu; fi),$(TORCH))
# torch==X -> torch==X+cpu, the same for torchvision: the pins of the CPU index's wheels.
TORCH_CPU_PINS = $(if $(CONSTRAINTS),$(shell sed -n -E 's/^(torch|torchvision)==([^+[:space:]]+)[[:space:]]*$$/\1==\2+cpu/p' $(CONSTRAINTS) 2>/dev/null),torch torchvision)
# SPEC=name for make promote: results/<name> joins reference/<name>; REPLACE=1 replaces an existing one.
REPLACE ?=
# DOCKER=auto (use a container engine when one answers) | yes | no
DOCKER ?= auto
# ENGINE=docker|podman (default: docker when `docker info` answers, else podman); extra flags for the
# engine's build (--build-arg, --secret, ...) and run: docs/containers.md
ENGINE ?=
BUILD_FLAGS ?=
RUN_FLAGS ?=
export DOCKER ENGINE CONSTRAINTS BUILD_FLAGS RUN_FLAGS

.PHONY: help install test lint site browser bench-cpu bench-gpu bench-smoke bench-micro bench-infer bench-scale-cpu report readme promote clean image-cpu image-gpu test-containers test-slow

help:
	@echo "make install      create $(VENV) and install mnistbench with dev extras (TORCH=cpu|cuda|auto, now $(TORCH_BUILD))"
	@echo "make test         run the test suite (installs first; the slow tests: make test-slow)"
	@echo "make bench-cpu    run $(SPEC_CPU) on the CPU (SPEC=bench/x.yaml for another spec)"
	@echo "make bench-gpu    run $(SPEC_GPU) on a CUDA GPU"
	@echo "make bench-smoke  a seconds-long end-to-end check"
	@echo "make bench-micro  pytest-benchmark micro-benchmarks, compared with the last saved run"
	@echo "make bench-infer  inference latency/throughput/memory/size over $(SPEC_INFER)'s weights (docs/inference.md)"
	@echo "make bench-scale-cpu  bench/scale-cpu.yaml sequentially and on Ray, compared (docs/scale-out.md)"
	@echo "make lint         hadolint on the Dockerfiles"
	@echo "make site         an index page over every results folder's page (site/index.html; DIRS=... OUT=...)"
	@echo "make readme       regenerate the docs' generated parts (README results, module map, linked outputs)"
	@echo "make promote SPEC=cpu  make results/cpu (complete, report --check clean) the reference: reference/cpu"
	@echo "make image-cpu    build the CPU image (make image-gpu: the CUDA image) with docker or podman"
	@echo "make test-containers  build the images and run bench/smoke.yaml in one with a real engine (slow)"

install: $(VENV)/.installed

# Re-install only when the package metadata or the pins change; the install is editable.
# mnistbench-constraints in the venv says which pins it has, for the run record (environment.constraints).
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@case "$(TORCH_BUILD)" in cpu|cuda) ;; *) echo "mnistbench: error: TORCH must be auto, cpu or cuda, not '$(TORCH)'" >&2; exit 2 ;; esac
	$(if $(filter cpu,$(TORCH_BUILD)),$(BIN)/pip install --quiet --timeout 20 --retries 1 $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) --index-url $(TORCH_CPU_INDEX) --no-deps $(TORCH_CPU_PINS) \
		|| echo "mnistbench: warning: PyTorch's CPU wheels ($(TORCH_CPU_INDEX)) could not be installed; torch comes from the ordinary index instead (on Linux with the CUDA libraries, about 5 GiB)" >&2)
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) -e '.[dev]'
	@if [ -n "$(CONSTRAINTS)" ]; then \
		$(BIN)/python -c 'import hashlib, sys; print(sys.argv[1], "sha256:" + hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
			"$(CONSTRAINTS)" > $(VENV)/mnistbench-constraints; \
	else rm -f $(VENV)/mnistbench-constraints; fi
	@touch $@

# lint-imports: the layers of the package (pyproject.toml [tool.importlinter]).
# hadolint runs inside the suite (tests/test_docker.py); `make lint` runs it alone. --durations: the slowest tests.
# Tests marked slow (signals in subprocesses, a Ray session, concurrent shards, real-data trainings) run in
# `make test-slow`; .ci/run runs both. The fast suite runs on two pytest-xdist workers, one test file per
# worker at a time (module fixtures are built once, files never shared between workers); PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile --durations=15

test-slow: install browser
	$(BIN)/pytest -q -m slow --durations=15

lint: install
	$(BIN)/hadolint --failure-threshold warning docker/cpu.Dockerfile docker/cuda.Dockerfile

# In a container when docker or podman answers (docs/containers.md), else natively; only the
# native run needs $(VENV), so the script installs it (INSTALL) when it falls back. The image is
# built when none has the tag of what goes into it; make image-cpu / image-gpu build it beforehand.
BENCH_INSTALL = $(MAKE) --no-print-directory -s install

# MNISTBENCH_INVOKED_AS: the resume hint after Ctrl-C names `make bench-cpu SPEC=... ARGS=...`, which works here.
bench-cpu:
	@MNISTBENCH_INVOKED_AS='make bench-cpu' INSTALL='$(BENCH_INSTALL)' scripts/bench.sh cpu $(or $(SPEC),$(SPEC_CPU)) $(ARGS)

bench-gpu:
	@MNISTBENCH_INVOKED_AS='make bench-gpu' INSTALL='$(BENCH_INSTALL)' scripts/bench.sh gpu $(or $(SPEC),$(SPEC_GPU)) $(ARGS)

image-cpu:
	@scripts/image.sh cpu

image-gpu:
	@scripts/image.sh gpu

# A real engine (podman is installed when none answers) builds both images and runs bench/smoke.yaml
# through make bench-cpu; the metrics must equal a native run's. Minutes; CI runs it after make test.
test-containers: install
	scripts/test-containers.sh

bench-smoke: install
	$(BIN)/mnistbench run bench/smoke.yaml

# Saved under .benchmarks/ and compared with the last saved run (docs/performance.md, "Micro-benchmarks"). Seconds to
# a minute: measured ranges per machine kind, and the CPU features that matter (AVX-512 vs AVX2), in docs/performance.md#timings.
bench-micro: install
	$(BIN)/pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-autosave --benchmark-compare -q \
		--benchmark-warmup=on --benchmark-warmup-iterations=10 --benchmark-min-rounds=5 --benchmark-max-time=0.25 \
		--benchmark-columns=min,median,mean,stddev,ops,rounds

# Inference over a results folder's kept weights, written to its inference/ (docs/inference.md); ARGS=--force
# measures again. Nothing else should run meanwhile: the figures are timings.
bench-infer: install
	$(BIN)/mnistbench infer --spec $(SPEC_INFER) $(ARGS)

# Sequential vs --executor ray, tables compared and wall times written to results/scale-cpu/comparison.md
# (docs/scale-out.md; the shipped one is reference/scale-cpu); about 5 minutes on 2 idle cores. Nothing else should run meanwhile.
bench-scale-cpu: install
	$(BIN)/python scripts/scale_compare.py bench/scale-cpu.yaml results/scale-cpu

report: install
	$(BIN)/mnistbench report $(or $(DIR),results/cpu)

# Each results folder's index.html is written by `make report`; this links them all (docs/site.md).
site: install
	$(BIN)/mnistbench site $(DIRS) --out $(or $(OUT),site)

# Headless Chromium for the browser tests (Debian's chromium + chromium-driver, as root); never fails: without it
# those tests skip, saying so.
browser:
	@scripts/install-browser.sh

# The generated parts of the docs (tests check each is current): the README's result blocks from the reference
# run files, the module map of docs/development.md, the command outputs the docs link (scripts/docs_outputs.py).
readme: install
	$(BIN)/python scripts/readme_results.py
	$(BIN)/python scripts/module_map.py
	$(BIN)/python scripts/docs_outputs.py

# A complete, `report --check`-clean results/$(SPEC) becomes reference/$(SPEC), with its machine (refused otherwise).
promote: install
	@[ -n "$(SPEC)" ] || { echo "mnistbench: error: make promote needs SPEC=name (results/name -> reference/name)" >&2; exit 2; }
	$(BIN)/mnistbench promote results/$(notdir $(basename $(SPEC))) $(if $(wildcard $(SPEC)),--spec $(SPEC)) $(if $(REPLACE),--replace)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
