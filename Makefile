# Two commands for a newcomer: `make test` and `make demo`. Both set up everything they need.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
APT_PKGS := openssh-server openmpi-bin
DEMO_DIR ?= demo

.PHONY: test demo install system-deps clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian packages the tests use (real sshd hosts, real mpirun); installed only when root.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	  command -v mpirun >/dev/null || missing="$$missing openmpi-bin"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  fi; \
	fi

test: install system-deps
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
