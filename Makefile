# The two commands: `make run` and `make test`. Both set everything up from pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# Bytecode is compiled on first import instead: the Kubernetes client alone is thousands of modules.
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	@bash deploy/dev/debian-packages.sh
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlcp dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The PostgreSQL lane's throwaway server is stopped however pytest ends (pass, fail or Ctrl-C).
# Two test processes: much of the suite waits on servers and timers, so the second core is used; each
# process has its own Temporal dev server, SeaweedFS and databases.
test: $(STAMP) lint
	@bash deploy/dev/debian-packages.sh --for-tests
	@eval "$$(bash deploy/dev/test-postgres.sh)"; \
	trap 'bash deploy/dev/test-postgres.sh stop' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/python -m pytest -n 2

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
