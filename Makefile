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
# Cross compilers for the wasm3 native module (make firmware, issue 7):
# armv6m (Pico W) and rv32imc (ESP32-C3).  ~600 MB installed, ~20 s.
FIRMWARE_PKGS := gcc-arm-none-eabi gcc-riscv64-unknown-elf

.PHONY: setup sysdeps firmware-deps firmware demo test test-fast modules check-modules bench clean

setup: sysdeps $(STAMP)

sysdeps:
	@missing=""; for p in $(APT_PKGS) $(EXTRA_PKGS); do \
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

firmware-deps:
	@$(MAKE) --no-print-directory sysdeps EXTRA_PKGS="$(FIRMWARE_PKGS)"

# wasm3 as a MicroPython native module for x64, armv6m and rv32imc:
# build/firmware/<arch>/wasm3.mpy (cached by source hash; docs/NATIVE.md), and
# the unix board's ROMFS mapper build/firmware/rommap-x64/rommap.mpy (docs/BOARDS.md).
firmware: firmware-deps $(STAMP)
	@$(VPY) firmware/build.py
	@$(VPY) firmware/build_rommap.py >/dev/null

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@echo "==> installing Python dependencies into $(VENV)"
	@$(VPY) -m pip install -q --upgrade pip >/dev/null
	@$(VPY) -m pip install -q -e '.[test]'
	@# MicroPython stubs for type-checking the board code (tests/test_board_typecheck.py),
	@# one directory per board: both packages ship machine.pyi, so they cannot share one.
	@$(VPY) -m pip install -q --no-deps --upgrade --target $(VENV)/stubs/pico_w \
	  micropython-rp2-rpi-pico-w-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2
	@$(VPY) -m pip install -q --no-deps --upgrade --target $(VENV)/stubs/esp32 \
	  micropython-esp32-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2
	@touch $@

modules: sysdeps
	@$(PY) modules/build.py

# CI rebuilds the example modules and checks they match the committed ones.
check-modules: sysdeps
	@$(PY) modules/build.py --check

test: setup check-modules firmware
	@$(VPY) -m pytest -x -p no:cacheprovider

demo: setup
	@$(VPY) -m host_sim.demo

# Node.js runs the 32-bit MicroPython (webassembly port) the `boards`
# section measures heap on (bench/board32.py fetches it from npm, pinned).
bench: setup
	@$(MAKE) --no-print-directory sysdeps EXTRA_PKGS="nodejs" || echo "note: no nodejs, the 32-bit board rows will be skipped"
	@$(VPY) bench/board32.py
	@$(VPY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info demo-run
