# The README names two targets: `make lab` (the rehearsal) and `make test` (the whole suite).
# `make test` runs the suite twice: current Python with the newest dependencies, and Python
# 3.6.15 (dom0's python3) with the floor versions in .ci/floors.txt.

PY       ?= python3
PY36     ?= $(shell pyenv root 2>/dev/null)/versions/3.6.15/bin/python3.6
VENV     ?= .venv
VENV36   ?= .venv36
PYTEST_ARGS ?=
export HYPOTHESIS_PROFILE ?= ci

.PHONY: lab test test-new test-36 test-ovs venv venv36 diagram clean

# pip >= 21.3 builds in the source tree (build/, *.egg-info): install from a throwaway copy of
# what the package needs, so the checkout stays clean on every pip and setuptools version.
SRC_COPY = tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	tar -cf - --exclude=__pycache__ setup.cfg pyproject.toml README.md agent states | tar -xf - -C "$$tmp"

$(VENV)/.done: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -U pip
	$(SRC_COPY) && $(VENV)/bin/python -m pip install -q -U "$$tmp[test]"
	touch $@

$(VENV36)/.done: setup.cfg pyproject.toml .ci/floors.txt
	$(PY36) -m venv $(VENV36)
	$(VENV36)/bin/python -m pip install -q "pip==21.3.1"
	$(SRC_COPY) && $(VENV36)/bin/python -m pip install -q -c .ci/floors.txt "$$tmp[test]"
	touch $@

venv: $(VENV)/.done
venv36: $(VENV36)/.done

lab: venv
	$(VENV)/bin/agent lab

test-new: venv
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-36: venv36
	$(VENV36)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: test-new test-36

# The kernel and lab tiers again on Open vSwitch bridges (dom0's kind; userspace datapath, a
# private ovsdb-server + ovs-vswitchd per topology), current Python. Needs openvswitch-switch.
test-ovs: venv
	SSPN_BRIDGE=ovs $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/kernel tests/lab $(PYTEST_ARGS)

diagram: venv
	$(VENV)/bin/agent diagram

clean:
	rm -rf $(VENV) $(VENV36) build *.egg-info

# Delivery: the zipapp (bytecode compiled by Python 3.6 when pyenv's 3.6.15 or $PY36 exists)
# and the dom0 RPM built from it (packaging/; needs rpmbuild: `apt-get install -y rpm`).
.PHONY: bundle rpm
bundle: venv
	$(VENV)/bin/python -m agent bundle --out dist $(if $(wildcard $(PY36)),--python $(PY36))

rpm: bundle
	$(VENV)/bin/python packaging/build_rpm.py --bundle dist --out dist
