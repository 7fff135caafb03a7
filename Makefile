# Two commands for a newcomer: `make run` and `make test`. Both build .venv from scratch if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-cluster screenshots lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tally serve --demo

# The sign-in tests' OpenID Connect provider (tests/oidc) is installed from its lock file when
# node is there; without node those tests skip with the reason.
test: $(STAMP)
	if command -v npm >/dev/null && [ ! -d tests/oidc/node_modules ]; then npm ci --no-audit --no-fund --prefix tests/oidc; fi
	$(BIN)/pytest

# The vote, realtime and ledger suites again, on a local 3-primary/3-replica Valkey Cluster
# (TALLY_TEST_STORE=cluster, tests/conftest.py); bounded, and SIGTERM stops the clusters too.
CLUSTER_SUITES := tests/api tests/live tests/integration tests/audit tests/e2e tests/roles tests/chaos tests/defences tests/admission tests/insider tests/security tests/witness
test-cluster: $(STAMP)
	TALLY_TEST_STORE=cluster timeout --kill-after=60 1800 $(BIN)/pytest $(CLUSTER_SUITES)

# The page tests that write screenshots, with the copies for the README refreshed in
# docs/screenshots/ (a plain `make test` writes them under build/screenshots/ only).
SCREENSHOT_TESTS := tests/e2e/test_console.py tests/e2e/test_presenter.py tests/e2e/test_voter_page.py tests/e2e/test_verify_page.py tests/e2e/test_docs_page.py tests/signin/test_signin_page.py
screenshots: $(STAMP)
	if command -v npm >/dev/null && [ ! -d tests/oidc/node_modules ]; then npm ci --no-audit --no-fund --prefix tests/oidc; fi
	TALLY_UPDATE_SCREENSHOTS=1 $(BIN)/pytest $(SCREENSHOT_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
