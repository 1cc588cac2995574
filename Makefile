# The few commands everyone runs. `make run` and `make test` set everything up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup run test test-fast lint typecheck bench-extract bench-dataset bench-ingest bench-gpu clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,embedded,dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job end to end on the bundled sample papers, with embedded defaults (no API key, no GPU).
run: $(STAMP)
	$(BIN)/methyl-distill run --input_directory data/papers --output_directory outputs/sample

# Every test tier that runs without a GPU (CI runs this through .ci/run).
test: $(STAMP)
	$(BIN)/python -m pytest

# Unit tests only: seconds, no services.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not flow and not slow and not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile.cpu docker/Dockerfile.cuda

typecheck: $(STAMP)
	$(BIN)/mypy

bench-extract: $(STAMP)
	$(BIN)/python bench/extract_throughput.py

bench-dataset: $(STAMP)
	$(BIN)/python bench/dataset_build.py

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu_lora_mfu.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache .mypy_cache
