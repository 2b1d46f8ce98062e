#!/bin/sh
# Rebuild the metering test programs (run from the repository root).
# modules/build.py does not look into this subdirectory: these are test
# inputs for tests/test_metering_wasm3.py only.
set -e
D=tests/modules/metering
C="clang --target=wasm32 -nostdlib -O2 -Wl,--no-entry"
$C -o $D/fib.wasm $D/fib.c
$C -o $D/checksum.wasm $D/checksum.c
$C -mbulk-memory -o $D/bulk.wasm $D/bulk.c
$C -o $D/branches.wasm $D/branches.c
wat2wasm $D/edge.wat -o $D/edge.wasm
wat2wasm $D/hostloop.wat -o $D/hostloop.wasm
