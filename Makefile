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
	@command -v redis-server >/dev/null || { echo "make test needs redis-server: apt-get install redis-server"; exit 1; }
	$(PY) -m pytest

clean:
	rm -rf $(VENV) data .pytest_cache

# How many comments the article page renders server-side in under 100 ms.
bench-page: $(VENV)/.test-deps
	$(PY) bench/page_render.py

# Fan-out against its peers (raw websockets broadcast, python-socketio, Node socket.io), one
# run, one load generator. Quick mode takes three minutes at most; FULL=1 sweeps N over 1k,
# 5k, 10k, 20k readers and writes bench/results/<date>.md with a plot. The bench installs
# the peers itself, pinned, into bench/.venv-peers and bench/peers/node/node_modules.
# PROFILE=1: py-spy on one Backchannel instance under load instead.
.PHONY: bench
bench: $(VENV)/.run-deps
	ulimit -n $$(ulimit -Hn) && $(PY) -m bench.fanout $(if $(FULL),--full) $(if $(PROFILE),--profile) $(BENCH_ARGS)
