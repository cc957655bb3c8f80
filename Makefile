# One entry point for people and CI. `make pipeline` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs/default
IMAGE ?= openeds-steps:latest
MODE ?= process

.PHONY: setup pipeline test lint bench clean compile engine image pipeline-docker predict

# The CPU lock (every package pinned, with hashes; python -m tools.lock rewrites it from pyproject.toml).
LOCK ?= requirements/cpu.lock
# torch's +cpu wheel comes from PyTorch's CPU index (or from a local wheel folder that pip is configured with).
TORCH_CPU_INDEX ?= $(if $(wildcard /opt/wheels),,https://download.pytorch.org/whl/cpu)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip >$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

# Exactly the locked versions (torch's +cpu wheel, not a multi-GB CUDA build), hashes checked; then
# the project itself without resolving anything again. pip's own output goes to $(VENV)/install.log,
# shown only when it fails: a machine's pip configuration and setuptools' editable-install notice
# would otherwise fill the console.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	@echo "installing $(LOCK) and the project into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/pip install -q --require-hashes $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX)) -r $(LOCK) \
		>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(BIN)/pip install -q --no-deps -e . >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

setup: $(VENV)/.installed

# The real sample frames validate reports beside the generated ones (evaluation only, never training).
FIXTURES ?= $(abspath ../shared/fixtures/openeds-sample)
export OPENEDS_FIXTURES_DIR ?= $(if $(wildcard $(FIXTURES)/images),$(FIXTURES),)

pipeline: setup
	MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824 \
	$(BIN)/python -m pipelines.full run --work-dir $(RUNS) --mode $(MODE)

# predict with the model `make pipeline` exported: on the unlabelled real frames and on a short video
# of generated frames; ellipses, masks and the annotated outputs land in $(RUNS)/predict-*/.
FRAMES ?= ../shared/fixtures/openeds-sample/unlabeled
MODEL ?= $(RUNS)/export-onnx/model
predict: setup
	$(BIN)/python -m steps predict --root $(RUNS)/predict-real --channel model=$(MODEL) --channel input=$(FRAMES)
	$(BIN)/python -m steps.inference.sample_video $(RUNS)/predict-input/generated.mp4 --frames 24
	$(BIN)/python -m steps predict --root $(RUNS)/predict-video --channel model=$(MODEL) \
		--channel input=$(RUNS)/predict-input/generated.mp4

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The linter on the whole tree, the type checker on everything that ships (pyproject).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m steps.bench

# KFP: the pipeline YAML (same as `kfp dsl compile --py pipelines/full.py`).
compile: setup
	$(BIN)/python -m pipelines.full compile --output pipeline.yaml

# Docker: install and start an engine (Debian's docker.io) and build the local base image.
engine:
	docker/setup-engine.sh

# The project image, offline from wheelhouse/ (no network during `docker build`).
image: setup
	OPENEDS_IMAGE=$(IMAGE) docker/build.sh --offline --tag $(IMAGE)

# The pipeline with one `docker run` per step.
pipeline-docker: setup
	$(BIN)/python -m pipelines.full run --work-dir $(RUNS)-docker --mode docker --image $(IMAGE)

clean:
	rm -rf $(VENV) runs
