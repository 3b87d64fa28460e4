# lmbricks: every set-up step a fresh clone needs lives here (venv, dependencies, model, corpora).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup fetch browser test test-unit demo lint bench clean mergekit-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The constraints file pins torch to the CPU build on this project's machines; the package's own
	# range stays open (torch>=2.4) for users with GPUs.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(STAMP)

## fetch: the default model and the corpora (cached in $$LMBRICKS_HOME, default ~/.cache/lmbricks)
fetch: setup
	$(BIN)/lmbricks models fetch smollm2-135m-instruct
	$(BIN)/lmbricks data fetch

## mergekit-venv: mergekit in a virtual environment of its own, for the agreement tests and bench/merge.py
mergekit-venv:
	test -x .bench-venvs/mergekit/bin/mergekit-yaml || { $(PYTHON) -m venv .bench-venvs/mergekit && \
	  .bench-venvs/mergekit/bin/python -m pip install -q -c constraints.txt mergekit; }

## browser: Debian's chromium for the headless report test (tests/tour/test_browser.py); needs root
browser:
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

## test: the whole suite (unit + integration on the real default model, agreement with mergekit)
test: fetch mergekit-venv browser
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

## test-unit: the unit suite only (no downloads)
test-unit: setup
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

## demo: the tour on the default model -> runs/tour/report.html
demo: fetch
	$(BIN)/lmbricks tour --out runs/tour

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

bench: setup mergekit-venv
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
