# skns: `make run` and `make test` do all set-up on a fresh Debian machine (as root).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= config.toml
PYTEST_ARGS ?=

# Debian packages the build and the tests need, by what is missing.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run test bench lint sysdeps testdeps venv clean

run: $(VENV)/.installed
	$(VENV)/bin/skns-metrics --config $(CONFIG)

test: $(VENV)/.installed testdeps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed testdeps
	$(VENV)/bin/skns-ctl bench all

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check daemon tests
	$(VENV)/bin/ruff format --check daemon tests

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | sysdeps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Build needs: a C compiler, Python headers and venv, libsystemd + pkg-config (systemd-python).
sysdeps:
	@missing=""; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	pkg-config --exists libsystemd 2>/dev/null || missing="$$missing libsystemd-dev"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
		|| missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or install:$$missing" >&2; exit 1; fi; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends $$missing; \
	fi

# Test needs: PostgreSQL server binaries (the tests start a throwaway cluster).
testdeps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "$$SKNS_TEST_PG_DSN" ]; then \
		echo "installing system packages: postgresql"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or install postgresql" >&2; exit 1; fi; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends postgresql; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
