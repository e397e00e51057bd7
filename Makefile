# Two entry points (see README): `make run` runs the main job, `make test` the test suite.
# Both create the virtual environment on first use: every role's extra (`all`) and the
# development tools, at the versions of constraints.txt. `make lint` checks style and types.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-all test-packaging lint docs docs-serve bench venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/taylorglo run

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''

# Installs into new virtual environments from the package index (CI runs it).
test-packaging: $(STAMP)
	$(PY) -m pytest -m packaging

# Lint and format check (ruff), type check (mypy); configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml): `docs` builds it into site/ (strictly: a broken
# link or a reference to a name that no longer exists fails), `docs-serve` serves it at
# http://127.0.0.1:8000 and rebuilds on every change. Offline; about 10 s.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

docs: $(STAMP)
	$(MKDOCS) build --strict

docs-serve: $(STAMP)
	$(MKDOCS) serve

clean:
	rm -rf $(VENV) build site *.egg-info .mypy_cache .ruff_cache
