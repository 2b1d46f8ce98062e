# aegis-edge: `make demo` and `make test` do all set-up on a fresh
# Debian / Ubuntu / Raspberry Pi OS machine with python3, make and apt.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Debian packages the project needs: compilers for the example modules
# (clang, lld, wabt), a broker for the mesh tests, socat for pty boards,
# and what building pywasm3 from its sdist needs.
APT_PKGS := python3-venv python3-dev gcc clang lld wabt mosquitto mosquitto-clients socat

.PHONY: setup sysdeps demo test test-fast modules check-modules bench clean

setup: sysdeps $(STAMP)

sysdeps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "==> installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing system packages. Run:"; \
	    echo "  sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@echo "==> installing Python dependencies into $(VENV)"
	@$(VPY) -m pip install -q --upgrade pip >/dev/null
	@$(VPY) -m pip install -q -e '.[test]'
	@touch $@

modules: sysdeps
	@$(PY) modules/build.py

# CI rebuilds the example modules and checks they match the committed ones.
check-modules: sysdeps
	@$(PY) modules/build.py --check

test: setup check-modules
	@$(VPY) -m pytest -x -p no:cacheprovider

demo: setup
	@$(VPY) -m host_sim.demo

bench: setup
	@$(VPY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info demo-run
