# chainshare: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ETHERS := tests/ethers/node_modules/.package-lock.json
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint typecheck bench contracts clean install

# Create the virtualenv and install chainshare with its test tools (re-run when pyproject changes).
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# ethers v6, pinned by tests/ethers/package-lock.json, for the ethers compatibility test; Node.js and
# npm come from the Debian packages when the machine has none.
$(ETHERS): tests/ethers/package.json tests/ethers/package-lock.json
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	npm ci --prefix tests/ethers --no-audit --no-fund --loglevel=error
	@touch $(ETHERS)

# A local network and its explorer in the foreground: prints URLs (the explorer's too) and dev
# accounts; Ctrl-C stops both (data kept in .devnet/, the explorer's SQLite index in .devnet/explorer/).
demo: $(STAMP)
	$(VENV)/bin/chainshare devnet up --dir .devnet --nodes 4 --explorer --foreground

# The whole suite (unit, integration with real node processes, ...).
test: $(STAMP) $(ETHERS)
	$(PY) -m pytest -n 2 --dist loadgroup -q

test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check chainshare tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy chainshare

bench: $(STAMP)
	$(VENV)/bin/chainshare bench ingest --nodes 1

# Regenerate contracts/*.json from the contract definitions (a test checks they are current).
contracts: $(STAMP)
	$(PY) -m chainshare.execution.contracts.export

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache .devnet bench-results tests/ethers/node_modules
