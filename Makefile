# Two commands for users: `make demo` and `make test`. Everything else is a helper target.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# test processes (pytest-xdist): one a core by default; 0 runs the suite in one process
TEST_WORKERS ?= auto
STAMP   = $(VENV)/.installed

.PHONY: venv test unit lint demo bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check service jsoc_bulk jsocsim tests bench migrations scripts
	$(VENV)/bin/mypy

test: $(STAMP) lint browser
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# the fast layer: tests marked unit (no database, emulator, socket or child process), in seconds;
# plugins the unit tests do not use are not loaded
unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -p no:schemathesis -p no:hypothesispytest -p no:anyio -m unit $(PYTEST_ARGS)

# chromium + chromium-driver for the dashboard's browser test (apt-get when missing; no-op after)
browser:
	@sh scripts/install-browser.sh

demo: $(STAMP)
	$(PY) scripts/demo.py

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
