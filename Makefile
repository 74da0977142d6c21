# Backchannel. `make run` serves the demo; `make test` runs the whole suite.
# Both create or refresh .venv themselves: nothing else to install by hand.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test clean bench-page

$(VENV)/.run-deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.run-deps
	$(PY) -m server serve

# The tests start every server they need themselves (uvicorn on free ports, headless
# Chromium); Chromium comes from the system (Debian's `chromium`, which .ci/run installs).
test: $(VENV)/.test-deps
	@command -v chromium >/dev/null || { echo "make test needs Debian's chromium: apt-get install chromium"; exit 1; }
	$(PY) -m pytest

clean:
	rm -rf $(VENV) data .pytest_cache

# How many comments the article page renders server-side in under 100 ms.
bench-page: $(VENV)/.test-deps
	$(PY) bench/page_render.py
