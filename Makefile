# EdgeTwin developer commands. `make demo` and `make test` are the two a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench system-deps clean

$(BIN)/edgetwin: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## demo: simulated meter -> agent -> local broker -> verified live view (Ctrl-C stops)
demo: $(BIN)/edgetwin
	$(BIN)/edgetwin demo $(ARGS)

## test: the default suite (real mosquitto, real Modbus servers, real SQLite files)
test: system-deps $(BIN)/edgetwin
	$(BIN)/pytest -q $(ARGS)

## lint: ruff and mypy
lint: $(BIN)/edgetwin
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: the pipeline benchmark (prints figures; last line is JSON)
bench: system-deps $(BIN)/edgetwin
	$(BIN)/python bench/pipeline.py

system-deps:
	@scripts/system-deps.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
