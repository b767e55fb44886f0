# EdgeTwin developer commands. `make demo` and `make test` are the two a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-containers test-packaging lint typecheck-tree bench system-deps clean

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

## test-containers: the container suite (a real Docker engine: image, supervise); minutes
test-containers: system-deps $(BIN)/edgetwin
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null)
	$(BIN)/pytest -q -m containers tests/containers $(ARGS)

## test-packaging: build an air-gapped bundle (needs the package index) and install it offline
test-packaging: $(BIN)/edgetwin
	$(BIN)/pytest -q -m packaging tests/test_packaging.py $(ARGS)

## lint: ruff, the import contracts (import-linter) and mypy
lint: $(BIN)/edgetwin typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# mypy cannot follow the editable install's import hook: it reads the packages through links
# named as installed (build/typecheck/edgetwin/<folder> -> <folder>).
FOLDERS := core wire central agent drivers twins edge_rules firmware_sim
typecheck-tree:
	@mkdir -p build/typecheck/edgetwin
	@for f in $(FOLDERS); do ln -sfn ../../../$$f build/typecheck/edgetwin/$$f; done

## bench: the pipeline benchmark (prints figures; last line is JSON)
bench: system-deps $(BIN)/edgetwin
	$(BIN)/python bench/pipeline.py

system-deps:
	@scripts/system-deps.sh

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache *.egg-info
