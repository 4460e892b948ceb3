# skns: `make run` and `make test` do all set-up on a fresh Debian machine (as root).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= config.toml
PYTEST_ARGS ?=

# Debian packages the build and the tests need, by what is missing.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run test bench soak lint sysdeps testdeps venv clean

run: $(VENV)/.installed
	$(VENV)/bin/skns-metrics --config $(CONFIG)

test: $(VENV)/.installed testdeps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed testdeps
	$(VENV)/bin/skns-ctl bench all

# Every subsystem under load for SOAK_ARGS (default --duration 180) while random children are
# kill -9ed and SIGSTOPped; prints a table and fails on any loss it cannot account for.
SOAK_ARGS ?=
soak: $(VENV)/.installed
	$(PY) tests/soak/soak.py $(SOAK_ARGS)

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

# Test needs: PostgreSQL server binaries (the tests start a throwaway cluster), and
# systemd-nspawn (tests/systemd boots a real systemd in a container), nats-server
# (tests/cluster starts a throwaway 3-node JetStream cluster).
testdeps:
	@if ! command -v systemd-nspawn >/dev/null 2>&1; then \
		echo "installing system packages: systemd-container"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or install systemd-container" >&2; exit 1; fi; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends systemd-container; \
	fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "$$SKNS_TEST_PG_DSN" ]; then \
		echo "installing system packages: postgresql"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or install postgresql" >&2; exit 1; fi; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends postgresql; \
	fi
	@if ! command -v nats-server >/dev/null 2>&1; then \
		echo "installing system packages: nats-server"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or install nats-server" >&2; exit 1; fi; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends nats-server; \
	fi
	@if ! command -v openssl >/dev/null 2>&1; then \
		echo "installing system packages: openssl (the cluster TLS tests make certificates)"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or install openssl" >&2; exit 1; fi; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends openssl; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

# ---- sudo make install / uninstall / purge ---------------------------------------------------
# Code goes under PREFIX (a virtual environment in $(PREFIX)/lib/skns/venv, its commands
# linked into $(PREFIX)/bin); the unit, sysusers.d, tmpfiles.d and sysctl.d files go under
# /etc, where systemd finds them whatever PREFIX is. DESTDIR stages the whole tree for
# packaging: the venv is built under DESTDIR with its paths rewritten to the final ones, and
# nothing is applied to the running system.
PREFIX  ?= /usr/local
DESTDIR ?=
# The venv outlives this checkout and its tools: build it on the distribution's python3.
INSTALL_PYTHON ?= /usr/bin/python3
# Extra pip arguments, e.g. PIP_ARGS='--no-index --find-links /srv/wheels' offline.
PIP_ARGS ?=
UNITDIR ?= /etc/systemd/system
SKNS_LIB  := $(PREFIX)/lib/skns
SKNS_VENV := $(SKNS_LIB)/venv
SKNS_STAGE := $(DESTDIR)$(SKNS_VENV).new
# The venv is rebuilt when the package's sources are newer than it (force: make -B install).
SKNS_BUILT := $(DESTDIR)$(SKNS_VENV)/.skns-built
SKNS_SOURCES := pyproject.toml $(wildcard README.md) \
	$(shell find daemon -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*')
SKNS_ETC_FILES := $(UNITDIR)/skns-metrics.service /etc/sysusers.d/skns.conf \
	/etc/tmpfiles.d/skns.conf /etc/sysctl.d/60-skns.conf /etc/skns/config.toml.dist
# systemd is running as PID 1 (sd_booted(3)): only then daemon-reload, stop, disable.
SYSTEMD_RUNNING := test -d /run/systemd/system

.PHONY: install uninstall purge root-check

root-check:
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then \
		echo "make $(MAKECMDGOALS) writes to $(PREFIX) and /etc: run it with sudo (or set DESTDIR)" >&2; \
		exit 1; fi

# sysdeps checks (and on Debian installs) what building the venv needs, for INSTALL_PYTHON.
install: PYTHON := $(INSTALL_PYTHON)
install: root-check $(SKNS_BUILT)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/sysusers.d \
		$(DESTDIR)/etc/tmpfiles.d $(DESTDIR)/etc/sysctl.d $(DESTDIR)/etc/skns
	ln -sfn $(SKNS_VENV)/bin/skns-metrics $(DESTDIR)$(PREFIX)/bin/skns-metrics
	ln -sfn $(SKNS_VENV)/bin/skns-ctl $(DESTDIR)$(PREFIX)/bin/skns-ctl
	sed 's|@PREFIX@|$(PREFIX)|g' systemd/skns-metrics.service.in \
		> $(DESTDIR)$(UNITDIR)/skns-metrics.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/skns-metrics.service
	install -m 0644 systemd/skns.sysusers $(DESTDIR)/etc/sysusers.d/skns.conf
	install -m 0644 systemd/skns.tmpfiles $(DESTDIR)/etc/tmpfiles.d/skns.conf
	install -m 0644 systemd/60-skns.conf $(DESTDIR)/etc/sysctl.d/60-skns.conf
	@# The installed config is the repository's, with ./var moved to /var/lib/skns (state)
	@# and /run/skns (sockets). config.toml.dist is always the current default; config.toml
	@# is written only when absent, so an edited one survives every upgrade.
	{ echo "# Installed by skns's make install. Edit freely: make install never overwrites this"; \
	  echo "# file; the current default is beside it as config.toml.dist. Apply changes with"; \
	  echo "# systemctl reload skns-metrics (it validates first: skns-ctl check-config)."; \
	  sed -e 's|"\./var/run/|"/run/skns/|g' -e 's|"\./var/|"/var/lib/skns/|g' \
	      -e 's|"\./var"|"/var/lib/skns"|g' config.toml; \
	} > $(DESTDIR)/etc/skns/config.toml.dist
	chmod 0644 $(DESTDIR)/etc/skns/config.toml.dist
	test -e $(DESTDIR)/etc/skns/config.toml \
		|| install -m 0640 $(DESTDIR)/etc/skns/config.toml.dist $(DESTDIR)/etc/skns/config.toml
	@if [ -n "$(DESTDIR)" ]; then \
		echo "staged in $(DESTDIR): on the target run systemd-sysusers, systemd-tmpfiles --create," \
		     "systemd-sysctl, systemctl daemon-reload"; \
		exit 0; fi; \
	set -e; \
	systemd-sysusers /etc/sysusers.d/skns.conf; \
	systemd-tmpfiles --create /etc/tmpfiles.d/skns.conf; \
	/lib/systemd/systemd-sysctl /etc/sysctl.d/60-skns.conf \
		|| echo "warning: net.core.rmem_max not raised now (container?); it applies at boot" >&2; \
	if $(SYSTEMD_RUNNING); then \
		systemctl daemon-reload; \
		if systemctl -q is-active skns-metrics.service; then \
			echo "skns-metrics still runs the old code: sudo systemctl restart skns-metrics"; \
		else echo "start it with: sudo systemctl enable --now skns-metrics"; fi; \
	else echo "systemd is not running as init here: skipped systemctl daemon-reload"; fi

$(SKNS_BUILT): $(SKNS_SOURCES) | root-check sysdeps
	rm -rf $(SKNS_STAGE)
	$(INSTALL_PYTHON) -m venv --prompt skns $(SKNS_STAGE)
	@# Build from a clean copy: no build/ or egg-info left in the checkout (owned by root
	@# under sudo), no stale build/lib modules, no races between two installs.
	set -e; src=$$(mktemp -d); trap 'rm -rf "$$src"' EXIT; \
	tar -c --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml daemon \
		$(wildcard README.md) | tar -x -C "$$src"; \
	$(SKNS_STAGE)/bin/python -m pip install -q --no-compile $(PIP_ARGS) "$$src"
	@# The venv was built at its staging path: point scripts and activate files at the final
	@# one, and byte-compile with the final path in tracebacks.
	grep -rlF '$(SKNS_STAGE)' $(SKNS_STAGE)/bin $(SKNS_STAGE)/pyvenv.cfg \
		| xargs -r sed -i 's|$(SKNS_STAGE)|$(SKNS_VENV)|g'
	$(SKNS_STAGE)/bin/python -m compileall -q -f -j 0 \
		-s $(SKNS_STAGE) -p $(SKNS_VENV) $(SKNS_STAGE)/lib
	touch $(SKNS_STAGE)/.skns-built
	@# Swap in the new venv in one rename; a running service keeps its open files.
	if [ -d $(DESTDIR)$(SKNS_VENV) ]; then mv $(DESTDIR)$(SKNS_VENV) $(DESTDIR)$(SKNS_VENV).old; fi
	mv $(SKNS_STAGE) $(DESTDIR)$(SKNS_VENV)
	rm -rf $(DESTDIR)$(SKNS_VENV).old

# Removes the code, the commands, the unit and its companions. Keeps /etc/skns/config.toml
# (your settings), /var/lib/skns (your data) and the skns user; `make purge` removes the
# config and the data too.
uninstall: root-check
	@if [ -z "$(DESTDIR)" ] && $(SYSTEMD_RUNNING); then \
		systemctl disable --now skns-metrics.service 2>/dev/null || true; \
	elif [ -e $(DESTDIR)$(UNITDIR)/skns-metrics.service ]; then \
		systemctl $(if $(DESTDIR),--root=$(DESTDIR)) disable -q skns-metrics.service 2>/dev/null || true; \
	fi
	rm -f $(addprefix $(DESTDIR),$(SKNS_ETC_FILES))
	rm -f $(DESTDIR)$(PREFIX)/bin/skns-metrics $(DESTDIR)$(PREFIX)/bin/skns-ctl
	rm -rf $(DESTDIR)$(SKNS_LIB)
	@if [ -z "$(DESTDIR)" ] && $(SYSTEMD_RUNNING); then systemctl daemon-reload; fi
	@if [ -e $(DESTDIR)/etc/skns/config.toml ]; then \
		echo "kept $(DESTDIR)/etc/skns/config.toml and $(DESTDIR)/var/lib/skns: make purge removes them"; \
	else rmdir $(DESTDIR)/etc/skns 2>/dev/null || true; fi

purge: uninstall
	rm -rf $(DESTDIR)/etc/skns $(DESTDIR)/var/lib/skns
