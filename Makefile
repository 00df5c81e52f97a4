# slipsq — every target installs what it needs first (Debian 12 / Raspberry Pi OS, as root).
#   make run    install, build, replay the bundled capture
#   make test   install, build, lint, run every test
#   make bench  install, build, run the benchmarks in bench/
#   make install    install the gateway service: /opt/slipsq, /usr/local/bin/slipsq, /etc/slipsq, the unit
#   make uninstall  remove it again, firewall rules included (config and blocks stay; make purge: them too)
SHELL := /bin/bash
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
APT_PKGS := build-essential python3-dev python3-venv libnetfilter-queue-dev libnfnetlink-dev \
            iptables ipset iproute2 argus-server argus-client nfdump
# what only the tests and benchmarks need (never a gateway): a real browser for the HTML report's
# test, iperf3 and ethtool for the bypass throughput bench and its kernel test, the system python's
# libseccomp binding for the service sandbox's kernel test (tests/kernel/sandbox.py)
TEST_APT_PKGS := chromium iperf3 ethtool python3-seccomp
CAPTURE ?= tests/data/beacon-https.pcap

.PHONY: all deps sysdeps build run test lint unit bench clean install uninstall purge

all: build

# System packages: installed only when missing (dpkg knows), so a second run costs nothing.
test unit bench: APT_EXTRA = $(TEST_APT_PKGS)
# and valgrind for bench/flowcost.py (instructions per flow: the same on a busy machine)
bench: APT_EXTRA += valgrind
sysdeps:
	@missing=""; for p in $(APT_PKGS) $(APT_EXTRA); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "slipsq: need root to install:$$missing" >&2; exit 1; fi; \
	  echo "slipsq: installing system packages with apt-get (once):$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.deps: pyproject.toml | sysdeps
	@[ -x $(VPY) ] || { echo "slipsq: creating the Python environment in $(VENV)/"; $(PY) -m venv $(VENV); }
	@echo "slipsq: installing pip, setuptools and Cython into $(VENV)/ (once; about a minute in all)"
	@$(VPY) -m pip install -q --upgrade pip setuptools wheel "Cython>=3.1,<3.3"  # why: pyproject.toml
	@echo "slipsq: installing NetfilterQueue (compiles against libnetfilter-queue)"
	@$(VPY) -m pip install -q NetfilterQueue
	@echo "slipsq: installing slipsq and its dependencies (pyproject.toml), with the test tools"
	@$(VPY) -m pip install -q --no-build-isolation -e ".[test]"
	@touch $@

deps: sysdeps $(VENV)/.deps

build: deps
	@echo "slipsq: building the compiled core (Cython; up to a minute the first time)"
	@$(VPY) setup.py -q build_ext --inplace

run: build
	@echo "slipsq: replaying $(CAPTURE)"
	$(VENV)/bin/slipsq replay $(CAPTURE)

lint: deps
	$(VENV)/bin/ruff check slipsq tests tools bench
	$(VENV)/bin/mypy slipsq tests bench tools

unit: build
	$(VENV)/bin/pytest -q -m "not kernel"

# every test: the namespace-free tiers on both cores (pytest-xdist), then the kernel tests one at a
# time (each builds a namespace lab and measures real traffic: they must not share the CPUs)
test: build lint
	$(VENV)/bin/pytest -q -ra -n 2 -m "not kernel"
	$(VENV)/bin/pytest -q -ra -m kernel

bench: build
	$(VPY) bench/replay.py
	$(VPY) bench/flowcost.py
	$(VPY) bench/flowfiles.py
	$(VPY) bench/inline.py
	$(VPY) bench/answers.py
	$(VPY) bench/report.py
	$(VPY) bench/hooks.py
	$(VPY) bench/multiqueue.py
	$(VPY) bench/throughput.py

# the installer needs none of the targets above (a Pi without the dev tools runs it directly);
# DESTDIR=DIR installs into a scratch root (no apt, no systemctl), PREFIX moves the venv
PREFIX ?= /opt/slipsq
INSTALL_ARGS = --prefix $(PREFIX) $(if $(DESTDIR),--root $(DESTDIR))
install:
	tools/install-gateway.sh $(INSTALL_ARGS)

uninstall:
	tools/install-gateway.sh --uninstall $(INSTALL_ARGS)

purge:
	tools/install-gateway.sh --uninstall --purge $(INSTALL_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache
	find slipsq \( -name '_*.c' -o -name '*.so' -o -name '*.html' \) -delete
