# chainshare: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ETHERS := tests/ethers/node_modules/.package-lock.json
WEBJS  := chainshare/explorer/web/js
BUNDLE := chainshare/explorer/web/static/verify.bundle.js
E2E    := tests/e2e/node_modules/.package-lock.json
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NPM_OK := command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }

.PHONY: demo test test-fast lint typecheck bench contracts clean install compose-client

# Create the virtualenv and install chainshare with its test tools (re-run when pyproject changes).
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP) $(BUNDLE)

# ethers v6, pinned by tests/ethers/package-lock.json, for the ethers compatibility test; Node.js and
# npm come from the Debian packages when the machine has none.
$(ETHERS): tests/ethers/package.json tests/ethers/package-lock.json
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	npm ci --prefix tests/ethers --no-audit --no-fund --loglevel=error
	@touch $(ETHERS)

# The explorer pages' in-browser verifier: @noble/hashes, @noble/curves and @msgpack/msgpack, pinned
# by its package-lock.json, bundled by esbuild (served by the explorer itself: no CDN), with their licences.
$(BUNDLE): $(WEBJS)/package.json $(WEBJS)/package-lock.json $(WEBJS)/verify.js
	@$(NPM_OK)
	npm ci --prefix $(WEBJS) --no-audit --no-fund --loglevel=error
	npm run --prefix $(WEBJS) -s build
	cat $(WEBJS)/node_modules/@noble/hashes/LICENSE $(WEBJS)/node_modules/@noble/curves/LICENSE \
		$(WEBJS)/node_modules/@msgpack/msgpack/LICENSE > chainshare/explorer/web/static/THIRD-PARTY-LICENSES.txt

# Browser tests: Debian's chromium (never a browser downloaded by a test tool) driven by playwright-core.
$(E2E): tests/e2e/package.json tests/e2e/package-lock.json
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@$(NPM_OK)
	npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
	@touch $(E2E)

# A local network and its explorer in the foreground: prints URLs (the explorer's too) and dev
# accounts; Ctrl-C stops both (data kept in .devnet/, the explorer's SQLite index in .devnet/explorer/).
demo: $(STAMP) $(BUNDLE)
	$(VENV)/bin/chainshare devnet up --dir .devnet --nodes 4 --explorer --foreground

# The Docker Compose client validates docker/compose.yml in the tests (no engine is needed): Debian's
# docker-compose when the machine has neither `docker compose` nor `docker-compose`.
compose-client:
	@{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; } || { \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; }

# The whole suite (unit, integration with real node processes, ...).
test: $(STAMP) $(ETHERS) $(BUNDLE) $(E2E) compose-client
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=15

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
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache .devnet bench-results tests/ethers/node_modules \
		tests/e2e/node_modules $(WEBJS)/node_modules $(BUNDLE) test-results
