# Two commands: `make demo` (set up + offline end-to-end demo), `make test` (set up + tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export MLFLOW_ALLOW_FILE_STORE ?= true

.PHONY: venv demo test test-slow lint clean

$(BIN)/coreg: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the wheels this machine holds locally (a newer torch pulls gigabytes).
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/coreg

venv: $(BIN)/coreg

demo: venv
	$(BIN)/python -m pipelines.demo

test: venv
	$(BIN)/python -m pytest -q -x --durations=15

test-slow: venv
	$(BIN)/python -m pytest -q --runslow -m slow --durations=5

lint: venv
	$(BIN)/ruff check coreg pipelines serving tests benchmarks

clean:
	rm -rf $(VENV) mlflow.db mlruns outputs
