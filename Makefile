# lmbricks: every set-up step a fresh clone needs lives here (venv, dependencies, model, corpora).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` / `make test-unit` (each gets cores / workers torch threads:
# tests/conftest.py; the quick tour runs once per run: tests/tour/conftest.py). 0: one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS))

PIP_TOOLS := pip-tools==7.7.0
COMPILE = .lock-venv/bin/pip-compile -q --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -c constraints.in

.PHONY: setup fetch browser test test-unit demo lint bench clean mergekit-venv lock lock-upgrade

# constraints.txt is the lock: every direct and transitive dependency of this project's own machines,
# generated from pyproject.toml and constraints.in by `make lock`. The package's own ranges stay open
# for users (torch>=2.4 of their choice); only these machines install from the lock.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python scripts/check_lock.py constraints.txt
	touch $@

setup: $(STAMP)

## fetch: the default model and the corpora (cached in $$LMBRICKS_HOME, default ~/.cache/lmbricks)
fetch: setup
	$(BIN)/lmbricks models fetch smollm2-135m-instruct
	$(BIN)/lmbricks data fetch

## mergekit-venv: mergekit in a virtual environment of its own, for the agreement tests and bench/merge.py
mergekit-venv:
	test -x .bench-venvs/mergekit/bin/mergekit-yaml || { $(PYTHON) -m venv .bench-venvs/mergekit && \
	  .bench-venvs/mergekit/bin/python -m pip install -q -c constraints-mergekit.txt mergekit; }

## browser: Debian's chromium for the headless report test (tests/tour/test_browser.py); needs root
browser:
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

## test: the whole suite (unit + integration on the real default model, agreement with mergekit)
test: fetch mergekit-venv browser
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=25 $(PYTEST_ARGS)

## test-unit: the unit suite only (no downloads)
test-unit: setup
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not integration" $(PYTEST_ARGS)

## demo: the tour on the default model -> runs/tour/report.html
demo: fetch
	$(BIN)/lmbricks tour --out runs/tour

## lint: style (ruff, with unused arguments and commented-out code), formatting, types (mypy) and dead
## code (vulture; names used only by frameworks are listed in scripts/vulture_allow.py). Part of CI.
VULTURE_IGNORE_NAMES := forward,backward,setup_context,handle_starttag,handle_endtag,handle_data
VULTURE_IGNORE_DECORATORS := @*.command,@*.callback,@field_validator,@model_validator,@register_*,@overload
# With BIN given on the command line (another checkout's venv, as from a git worktree), lint uses it
# as it is: installing this tree into it would re-point that checkout's editable install.
lint: $(if $(filter command line,$(origin BIN)),,setup)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy src scripts
	$(BIN)/vulture src tests bench scripts scripts/vulture_allow.py --min-confidence 60 \
	  --ignore-names '$(VULTURE_IGNORE_NAMES)' --ignore-decorators '$(VULTURE_IGNORE_DECORATORS)'

## bench: every claim script in bench/ (not the harness and the workers it runs), each JSON to stdout
BENCH_SCRIPTS = $(filter-out bench/harness.py bench/%_workers.py,$(wildcard bench/*.py))
bench: setup mergekit-venv
	@for script in $(BENCH_SCRIPTS); do echo "== $$script"; $(BIN)/python $$script || exit 1; done

## lock: regenerate constraints.txt (and the mergekit venv's lock) after changing a dependency in
## pyproject.toml or constraints.in; existing pins are kept where they still fit. lock-upgrade: move
## every pin to the newest release the ranges admit (then run `make test` before committing).
lock:
	test -x .lock-venv/bin/pip-compile || { $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q $(PIP_TOOLS); }
	$(COMPILE) $(LOCK_FLAGS) --extra test -o constraints.txt pyproject.toml
	$(COMPILE) $(LOCK_FLAGS) -o constraints-mergekit.txt bench/mergekit.in

lock-upgrade:
	$(MAKE) lock LOCK_FLAGS=--upgrade

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
