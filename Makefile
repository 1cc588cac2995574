# The few commands everyone runs. `make run` and `make test` set everything up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup run test test-fast lint typecheck bench-extract bench-extract-10k bench-dataset bench-ingest bench-gpu clean

# llama-cpp-python (the embedded teacher) has no binary wheel on PyPI: the first set-up compiles
# llama.cpp, most of its time on 2 cores. We build only what we load: LLAVA_BUILD=OFF leaves out the
# multimodal mtmd library (53 of 193 build steps); tests, examples, tools and the server binary are
# already off in llama.cpp as llama-cpp-python's subproject. GGML_NATIVE=OFF compiles ggml for
# AVX2/FMA/F16C (any x86-64 CPU since 2013) instead of -march=native: fewer kernels to compile, and
# the native build's AVX-512/AMX kernels crashed (SIGSEGV) on the first chat request on our 2-core
# machines. Ninja uses every core. Your CMAKE_ARGS (e.g. -DGGML_CUDA=on) come after ours.
# docs/development.md, set-up time.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python first, compiled here with the flags above: pip's wheel cache does not know
	# build flags, and a wheel it cached from a -march=native build crashes (the range: pyproject).
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" $(BIN)/python -m pip install --quiet --no-cache-dir \
		-c constraints.txt 'llama-cpp-python[server]>=0.3'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,embedded,dev]'
	touch $(STAMP)

# Debian's Chromium, for the browser test of markers.html (tests/test_markers_page.py): playwright
# drives it and never downloads a browser of its own. Installed with apt-get where we are root.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for tests/test_markers_page.py"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
			|| echo "WARNING: apt-get could not install chromium: tests/test_markers_page.py will not run"; \
	else \
		echo "NOTE: $(CHROMIUM) is missing; install Debian's chromium as root (apt-get install chromium)"; \
		echo "      for tests/test_markers_page.py, which is skipped without it (and fails under CI)."; \
	fi

setup: $(STAMP) $(CHROMIUM)

# The main job end to end on the bundled sample papers, with embedded defaults (no API key, no GPU).
run: $(STAMP)
	$(BIN)/methyl-distill run --input_directory data/papers --output_directory outputs/sample

# Every test tier that runs without a GPU (CI runs this through .ci/run).
test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest

# Unit tests only: seconds, no services.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not flow and not slow and not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile.cpu docker/Dockerfile.cuda docker/Dockerfile.worker

typecheck: $(STAMP)
	$(BIN)/mypy

bench-extract: $(STAMP)
	$(BIN)/python bench/extract_throughput.py
	$(BIN)/python bench/batch_extract.py
	$(BIN)/python bench/extract_workers.py

# 10,000 papers through Prefect, then all cached (about an hour on 2 cores; --papers N for less).
bench-extract-10k: $(STAMP)
	$(BIN)/python bench/extract_10k.py

bench-dataset: $(STAMP)
	$(BIN)/python bench/dataset_build.py

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu_lora_mfu.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache .mypy_cache
