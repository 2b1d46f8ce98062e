"""wasm3 as a MicroPython native module (firmware/, issue 7), on the real
MicroPython Unix binary, against pywasm3 on CPython.

Differential: every example module, every fixture module and the metering
programs, each plain and metered, driven with the same events, calls and
host functions (tests/native_drive.py runs on both interpreters) give the
same results, trap messages, host calls, state and gas per call.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

from node.core import metering, wasmparse
from node.engine.wasm3_engine import Wasm3Engine

import native_drive
from test_metering_wasm3 import EVENTS, PROGRAMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MET = os.path.join(ROOT, "tests", "modules", "metering")
MPY_DIR = os.path.join(ROOT, "build", "firmware", "x64")
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "modules", "*", "*.wasm")))
# Fixtures that never stop or grow memory without bound when unmetered and
# uncapped (as in tests/test_metering_wasm3.py); the metered runs cover them.
UNBOUNDED = ("hostile_spin.wasm", "hostile_spin_start.wasm", "hostile_membomb.wasm")
FIXTURES = sorted(glob.glob(os.path.join(ROOT, "tests", "modules", "*.wasm")))
STACK = 64 * 1024       # node/engine/wasm3_engine.py's STACK_BYTES


def micropython():
    return os.path.join(os.path.dirname(sys.executable), "micropython")


@pytest.fixture(scope="session")
def native_mpy():
    """The x64 wasm3.mpy, built by `make firmware` (cached: a no-op when
    nothing changed)."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "firmware", "build.py"), "--arch", "x64"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    path = os.path.join(MPY_DIR, "wasm3.mpy")
    assert os.path.exists(path)
    return path


def run_micropython(spec, tmp_path, heap="16M", timeout=240):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(spec))
    env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (ROOT, MPY_DIR))
    r = subprocess.run([micropython(), "-X", "heapsize=" + heap, "tests/native_drive.py", str(job)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpython_gas(inst):
    return round(inst.module.gasUsed * metering.GAS_UNIT)


def imports_of(wasm):
    try:
        return sorted({nm for mod, nm, _, _ in wasmparse.parse(wasm).imports
                       if mod == "aegis" and nm in native_drive.SIGS})
    except ValueError:
        return []


def jobs_for(paths, tmp_path):
    """Plain and metered jobs for each module: the event stream for ABI
    modules, the export calls of PROGRAMS for the metering programs."""
    jobs = []
    for path in paths:
        with open(path, "rb") as f:
            wasm = f.read()
        name = os.path.basename(path)[:-5]
        if os.path.dirname(path) == MET:
            steps = [["call", fn, list(a)] for fn, arglist in PROGRAMS[name] for a in arglist]
        else:
            try:
                ex = wasmparse.parse(wasm).exports
            except ValueError:
                ex = {}
            steps = [["call", "aegis_start", []]] if "aegis_start" in ex else []
            if "aegis_event" in ex and "aegis_alloc" in ex:
                steps += [["event", t, d.hex()] for t, d in EVENTS]
            if "aegis_stop" in ex:
                steps.append(["call", "aegis_stop", []])
        variants = [] if os.path.basename(path) in UNBOUNDED else [("plain", path, None)]
        try:
            metered = tmp_path / (name + ".metered.wasm")
            metered.write_bytes(metering.instrument(wasm))
            variants.append(("metered", str(metered), metering.DEFAULT_FUEL))
        except metering.MeteringError:
            pass        # invalid.wasm: nothing to meter; the plain run shows the refusal
        for label, wpath, fuel in variants:
            jobs.append({"id": "%s/%s" % (name, label), "wasm": wpath, "fuel": fuel,
                         "imports": imports_of(wasm), "steps": steps})
    return jobs


def differential(paths, tmp_path):
    jobs = jobs_for(paths, tmp_path)
    want = native_drive.run(Wasm3Engine(), cpython_gas, jobs)
    got = run_micropython({"stack": STACK, "jobs": jobs}, tmp_path)
    assert len(got) == len(jobs)
    for job, w, g in zip(jobs, want, got):
        w = json.loads(json.dumps(w))          # tuples -> lists, as the JSON side
        assert g == w, job["id"]
    return jobs, want


def test_example_and_fixture_modules_same_as_pywasm3(native_mpy, tmp_path):
    jobs, res = differential(EXAMPLES + FIXTURES, tmp_path)
    ran = [j["id"] for j, r in zip(jobs, res) if "log" in r and any(x[0] == "ok" for x in r["log"])]
    assert len(ran) >= len(EXAMPLES) * 2    # the examples really ran, plain and metered
    assert any("refused" in r for r in res)  # and invalid.wasm was refused on both
    metered = [r for j, r in zip(jobs, res) if j["fuel"] and "gas" in r]
    assert metered and all(sum(r["gas"]) > 0 for r in metered
                           if any(x[0] == "ok" for x in r["log"]))


def test_metering_programs_same_as_pywasm3(native_mpy, tmp_path):
    paths = [os.path.join(MET, n + ".wasm") for n in sorted(PROGRAMS)]
    jobs, res = differential(paths, tmp_path)
    traps = [x for r in res for x in r["log"] if x[0] == "trap"]
    assert traps    # trap messages (integer divide by zero, out of bounds...) compared too


def test_native_engine_behaviour_on_micropython(native_mpy, tmp_path):
    """What the differential runs do not reach: out of gas then a fresh
    budget, a host function raising, fib(27), gc between calls, a memory
    cap below one page, and a small heap."""
    script = tmp_path / "t.py"
    wat = tmp_path / "tiny.wat"
    wat.write_text(TINY_WAT)
    subprocess.run(["wat2wasm", str(wat), "-o", str(tmp_path / "tiny.wasm")], check=True)
    script.write_text(NATIVE_CHECKS % {"met": MET, "tiny": (tmp_path / "tiny.wasm").read_bytes().hex(),
                                       "edge": metering.instrument(
                                           open(os.path.join(MET, "edge.wasm"), "rb").read()).hex()})
    env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (ROOT, MPY_DIR))
    r = subprocess.run([micropython(), "-X", "heapsize=256K", str(script)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("all ok"), r.stdout + r.stderr


TINY_WAT = """(module (memory (export "memory") 1)
  (func (export "poke") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))"""

NATIVE_CHECKS = r"""
import gc, wasm3
from node.board.native_engine import NativeEngine, EngineError, Trap, memory_need
eng = NativeEngine(stack=16384)
fw = open("%(met)s/fib.wasm", "rb").read()
declared, touched = memory_need(fw)
assert declared == 131072 and touched == 66560     # clang: 64 KiB C stack after data
# a cap at what it touches (not its 2 declared pages) fits a small heap
fib = eng.load(fw, {}, mem_limit=(touched + 4095) // 4096 * 4096)
assert len(fib.memory()) == 69632
for i in range(30):
    gc.collect()
    assert fib.call("fib", 20) == 6765
assert fib.call("fib", 27) == 196418
# metered: out of gas is a Trap, and the next call has a fresh budget
edge = eng.load(bytes.fromhex("%(edge)s"), {}, mem_limit=4096)
b = edge.budget_setter(100000)
b()
try:
    edge.call("spin")
    raise SystemExit("spin returned")
except Trap as e:
    assert str(e) == "Out of gas", e
assert edge.gas_used() > 100000
b()
assert edge.call("sign", -9) == -1
# a host function that raises: the Python exception comes out, the instance goes on
def boom(*a):
    raise ValueError("host says no")
free0 = gc.mem_free()
del fib, edge
gc.collect()
assert gc.mem_free() > free0 + 69632, (free0, gc.mem_free())     # fib's memory and all
echo = eng.load(open("tests/modules/echo.wasm", "rb").read(), {"emit": ("i(iiii)", boom)},
                mem_limit=8192)
p = echo.call("aegis_alloc", 8)
echo.memory()[p:p + 8] = b"t/xabcde"
try:
    echo.call("aegis_event", p, 3, p + 3, 5)
    raise SystemExit("host exception swallowed")
except ValueError as e:
    assert str(e) == "host says no"
assert echo.call("aegis_alloc", 8) == p
# bad input is refused cleanly
for bad in (b"", b"\x00asm\x01\x00\x00\x00\x05", b"garbage"):
    try:
        eng.load(bad, {})
        raise SystemExit("accepted bad wasm")
    except EngineError:
        pass
# memory capped below one page: inside works, past the cap traps
tiny = bytes.fromhex("%(tiny)s")
assert memory_need(tiny) == (65536, 0)
small = NativeEngine(stack=4096, mem_limit=4096).load(tiny, {})
assert len(small.memory()) == 4096
small.call("poke", 4095, 7)
assert small.call("peek", 4095) == 7 and small.memory()[4095] == 7
try:
    small.call("poke", 4096, 1)
    raise SystemExit("write past the cap did not trap")
except Trap as e:
    assert "out of bounds" in str(e), e
for i in range(20):
    gc.collect()
print("all ok")
"""


def test_native_engine_module_readers_match_wasmparse():
    """native_engine's small readers (a board cannot spare wasmparse's heap)
    agree with node.core.wasmparse on every module we have, and refuse
    truncated input with ValueError."""
    from node.board import native_engine as NE
    n = 0
    for path in EXAMPLES + FIXTURES + glob.glob(os.path.join(MET, "*.wasm")):
        with open(path, "rb") as f:
            wasm = f.read()
        try:
            info = wasmparse.parse(wasm)
        except ValueError:
            continue
        assert NE.imported_functions(wasm) == [nm for mod, nm, kind, _ in info.imports
                                               if mod == "aegis" and kind == 0], path
        declared, touched = NE.memory_need(wasm)
        assert declared == (info.memory[0] * 65536 if info.memory else 0), path
        assert touched is None or 0 <= touched <= max(declared, 1 << 20), path
        n += 1
    assert n > 20
    with open(os.path.join(MET, "fib.wasm"), "rb") as f:
        fib = f.read()
    for cut in (9, 20, len(fib) // 2):
        try:
            NE.memory_need(fib[:cut])
            NE.imported_functions(fib[:cut])
        except ValueError:
            pass
    with pytest.raises(ValueError):
        NE.memory_need(b"not wasm")
