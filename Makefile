# One command for each thing a person does with the project; each sets itself up on first use.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip

.PHONY: setup run test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --constraint constraints.txt --editable ".[openvino,ultralytics,dev]"
	touch $(STAMP)

## run: start the service (Prefect server and UI, REST API, a runner serving the flows);
## ports and addresses from MODEL_DOWNLOAD_PREFECT_PORT/_HOST and MODEL_DOWNLOAD_API_PORT/_HOST
run: $(STAMP)
	$(BIN)/python -m deployments.serve

## test: the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: the benchmarks (loopback only; each prints ratios to its reference)
bench: $(STAMP)
	$(BIN)/python benchmarks/pull_throughput.py
	CI=true $(BIN)/python benchmarks/convert_vs_cli.py
	$(BIN)/python benchmarks/api_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
