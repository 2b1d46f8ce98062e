"""The metering pass (node/core/metering.py) against real wasm3 (pywasm3).

Differential: every example module, every loadable fixture and the programs
in tests/modules/metering/ give the same results metered and unmetered.
Enforcement: a call that never returns is stopped, within ~100 ms with
DEFAULT_FUEL, and the module stays usable.  Fuzz: instrument() only ever
succeeds or raises MeteringError.
"""
import glob
import os
import time

import cbor2
import pytest
import wasm3
from hypothesis import HealthCheck, given, settings, strategies as st

from node.core import metering
from node.core.metering import DEFAULT_FUEL, MeteringError, instrument

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MET = os.path.join(ROOT, "tests", "modules", "metering")
SIGS = {"emit": "i(iiii)", "log": "v(iii)", "now_ms": "I()",
        "state_get": "i(iiii)", "state_set": "i(iiii)", "call": "i(iiiiii)"}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def raw_imports(wasm):
    from node.core import wasmparse
    return wasmparse.parse(wasm).imports


class Host:
    """One instance on its own runtime, with a dict-backed ABI v1 host.
    Metered instances get a fresh DEFAULT_FUEL budget before every call
    (pywasm3 needs it: a metered module with no limit traps at once)."""

    def __init__(self, wasm, metered, fuel=DEFAULT_FUEL, stack=64 * 1024):
        self.wasm = instrument(wasm) if metered else wasm
        self.metered, self.fuel = metered, fuel
        self.state, self.out = {}, []
        self.total = 0.0    # gas over all calls (gasUsed restarts per call)
        env = wasm3.Environment()
        self.rt = env.new_runtime(stack)
        self.mod = env.parse_module(self.wasm)
        self.rt.load(self.mod)
        for mod, nm, kind, _ in raw_imports(wasm):
            if mod == "aegis" and nm in SIGS:
                self.mod.link_function("aegis", nm, SIGS[nm], getattr(self, "h_" + nm))

    def mem(self, p, n):
        m = self.rt.get_memory(0)
        return bytes(m[p:p + n]) if 0 <= p and 0 <= n and p + n <= len(m) else None

    def h_emit(self, tp, tl, dp, dl):
        self.out.append(("emit", self.mem(tp, tl), self.mem(dp, dl)))
        return 0

    def h_log(self, lv, p, n):
        self.out.append(("log", lv, self.mem(p, n)))

    def h_now_ms(self):
        return 1_700_000_000_000

    def h_state_get(self, kp, kl, bp, cap):
        v = self.state.get(self.mem(kp, kl))
        if v is None:
            return -1
        if len(v) <= cap and self.mem(bp, cap) is not None:
            self.rt.get_memory(0)[bp:bp + len(v)] = v
        return len(v)

    def h_state_set(self, kp, kl, vp, vl):
        k = self.mem(kp, kl)
        if vl < 0:
            self.state.pop(k, None)
        else:
            self.state[k] = self.mem(vp, vl)
        return 0

    def h_call(self, pp, pl, ip, il, op, cap):
        reply = cbor2.dumps({"port": self.mem(pp, pl), "in": self.mem(ip, il)})
        if len(reply) <= cap and self.mem(op, cap) is not None:
            self.rt.get_memory(0)[op:op + len(reply)] = reply
        return len(reply)

    def call(self, name, *args):
        """("ok", result) or ("trap", message): traps are compared too."""
        if self.metered:
            metering.set_budget(self.mod, self.fuel)
        try:
            return ("ok", self.rt.find_function(name)(*args))
        except RuntimeError as e:
            return ("trap", str(e))
        finally:
            self.total += self.mod.gasUsed if self.metered else 0

    def exports(self):
        from node.core import wasmparse
        return wasmparse.parse(self.wasm).exports

    def deliver(self, topic, data):
        t = topic.encode()
        kind, p = self.call("aegis_alloc", len(t) + len(data))
        if kind != "ok" or p == 0:
            return (kind, p)
        m = self.rt.get_memory(0)
        if p + len(t) + len(data) > len(m):
            return ("bad alloc", p)
        m[p:p + len(t) + len(data)] = t + data
        return self.call("aegis_event", p, len(t), p + len(t), len(data))


EVENTS = [("sensor/s1/temp", cbor2.dumps(21.5)), ("sensor/s2/temp", cbor2.dumps(35)),
          ("config/threshold", cbor2.dumps(25)), ("sensor/s1/temp", cbor2.dumps(40.25)),
          ("sensor/s1/temp", cbor2.dumps(-3)), ("facts/request", cbor2.dumps({"q": "x"})),
          ("sensor/a/b/temp", cbor2.dumps(1)), ("sensor/s3/temp", b"\xff\x00"),
          ("other/topic", b"")] + [("sensor/s%d/temp" % (i % 4), cbor2.dumps(i * 1.5))
                                   for i in range(40)]


def drive(h):
    ex = h.exports()
    log = []
    if "aegis_start" in ex:
        log.append(h.call("aegis_start"))
    if "aegis_event" in ex and "aegis_alloc" in ex:
        for topic, data in EVENTS:
            log.append(h.deliver(topic, data))
    if "aegis_stop" in ex:
        log.append(h.call("aegis_stop"))
    return log, h.out, h.state


EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "modules", "*", "*.wasm")))
FIXTURES = sorted(glob.glob(os.path.join(ROOT, "tests", "modules", "*.wasm")))


@pytest.mark.parametrize("path", EXAMPLES + FIXTURES, ids=os.path.basename)
def test_modules_behave_the_same_metered(path):
    wasm = read(path)
    try:
        plain = Host(wasm, False)
    except (RuntimeError, ValueError):
        # wasm3 refuses it (invalid.wasm): metering must refuse it too,
        # or produce something wasm3 refuses as well.
        with pytest.raises((MeteringError, RuntimeError)):
            Host(wasm, True)
        return
    metered = Host(wasm, True)
    log, out, state = drive(metered)
    assert (log, out, state) == drive(plain)
    if any(kind == "ok" for kind, _ in log):
        assert metered.total > 0    # it ran, so it paid


# name -> (export, list of argument tuples)
PROGRAMS = {
    "fib": [("fib", [(n,) for n in range(0, 21)])],
    "checksum": [("checksum", [(0, 1), (1, 2), (1000, 3), (65536, 7), (99999, 9)])],
    "bulk": [("fill_copy", [(0, 1), (1, 2), (63, 3), (64, 4), (65, 5), (70000, 255)]),
             ("size", [()]), ("grow", [(0,), (1,), (3,), (70000,), (-1,)]), ("size", [()])],
    "branches": [("mix", [(0,), (1,), (17,), (200,), (1500,)])],
    "edge": [("nested", [(0,), (1,), (2,), (50,)]),
             ("loop_params", [(0,), (1,), (10,), (1000,)]),
             ("multi_block", [(0,), (1,)]),
             ("find", [(0,), (35,), (9801,), (10007,)]),
             ("trap_odd", [(2,), (3,), (-4,)]),
             ("apply", [(0, 5, 3), (1, 5, 3), (2, 5, 3), (3, 5, 3)]),
             ("sign", [(-5,), (0,), (7,)]),
             ("table_loop", [(0,), (1,), (2,), (3,), (100,)]),
             ("depth", [(0,), (1,), (1000,)]),
             ("grow", [(1,), (0,), (10,)]), ("pages", [()]), ("ext", [(0x80,), (5,)])],
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_metering_programs_behave_the_same(name):
    wasm = read(os.path.join(MET, name + ".wasm"))
    plain, metered = Host(wasm, False), Host(wasm, True)
    for fn, arglist in PROGRAMS[name]:
        for args in arglist:
            a, b = plain.call(fn, *args), metered.call(fn, *args)
            assert a == b, (fn, args)
    assert metered.total > 0


def test_bulk_and_call_indirect_traps_match():
    wasm = read(os.path.join(MET, "edge.wasm"))
    plain, metered = Host(wasm, False), Host(wasm, True)
    a, b = plain.call("apply", 9, 1, 1), metered.call("apply", 9, 1, 1)
    assert a[0] == b[0] == "trap" and a == b
    assert metered.call("trap_odd", 1)[0] == "trap"


def test_fib25_same_result_and_its_price():
    wasm = read(os.path.join(MET, "fib.wasm"))
    plain, metered = Host(wasm, False), Host(wasm, True)
    assert plain.call("fib", 25) == metered.call("fib", 25) == ("ok", 75025)
    used = metered.mod.gasUsed * metering.GAS_UNIT
    assert 1e6 < used < DEFAULT_FUEL    # fib(25) fits one default budget
    # ... and an exact budget: just enough passes, a little less traps
    metered.fuel = int(used) + 1
    assert metered.call("fib", 25) == ("ok", 75025)
    metered.fuel = int(used) - 100
    assert metered.call("fib", 25) == ("trap", "[trap] Out of gas")


def spin_time(export, fuel, wasm="edge", link=False):
    h = Host(read(os.path.join(MET, wasm + ".wasm")), True, fuel=fuel)
    t = time.perf_counter()
    res = h.call(export)
    return time.perf_counter() - t, res, h


@pytest.mark.parametrize("export,wasm", [("spin", "edge"), ("spin_call", "edge"),
                                         ("spin_host", "hostloop")])
def test_default_fuel_stops_a_spin_quickly(export, wasm):
    best = min(spin_time(export, DEFAULT_FUEL, wasm)[0] for _ in range(3))
    dt, res, h = spin_time(export, DEFAULT_FUEL, wasm)
    assert res == ("trap", "[trap] Out of gas")
    print("%s stopped after %.1f ms (best of 3: %.1f ms)" % (export, dt * 1e3, best * 1e3))
    assert best < 0.100


def test_out_of_gas_then_the_next_call_works():
    dt, res, h = spin_time("spin", 100000)
    assert res[0] == "trap" and "Out of gas" in res[1]
    assert h.call("sign", -9) == ("ok", -1)     # fresh budget, same runtime
    assert h.call("spin")[1] == "[trap] Out of gas"
    assert h.call("find", 35) == ("ok", 1035)


def test_deep_recursion():
    wasm = read(os.path.join(MET, "edge.wasm"))
    plain = Host(wasm, False, stack=1 << 20)
    metered = Host(wasm, True, stack=1 << 20)
    for n in (5000, 20000):
        assert plain.call("depth", n) == metered.call("depth", n)
    # past the stack both trap the same way (not with Out of gas)
    a, b = plain.call("depth", 10 ** 7), metered.call("depth", 10 ** 7)
    assert a == b and a[0] == "trap" and "gas" not in a[1]
    # a small budget stops a recursion before the stack does
    metered.fuel = 10000
    assert metered.call("depth", 10 ** 7) == ("trap", "[trap] Out of gas")


def test_memory_grow_is_priced():
    h = Host(read(os.path.join(MET, "bulk.wasm")), True)
    before = h.call("size")
    g0 = h.mod.gasUsed
    assert h.call("grow", 10) == ("ok", before[1])
    assert (h.mod.gasUsed - g0) * metering.GAS_UNIT >= 10 * metering.PAGE_COST
    # a single call cannot grow more than DEFAULT_FUEL / PAGE_COST pages ...
    assert h.call("grow", DEFAULT_FUEL // metering.PAGE_COST + 1) == ("trap", "[trap] Out of gas")
    # ... but a request past the memory's maximum fails (-1) for free, as before
    assert h.call("grow", 70000) == ("ok", -1)


# ---------------------------------------------------------------- fuzz
VALID = [read(p) for p in EXAMPLES + FIXTURES + sorted(glob.glob(os.path.join(MET, "*.wasm")))
         if not p.endswith("invalid.wasm")]


def check_fuzz(data):
    try:
        out = instrument(data)
    except MeteringError:
        return
    env = wasm3.Environment()
    try:
        env.new_runtime(4096).load(env.parse_module(out))
    except RuntimeError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    check_fuzz(data)
    check_fuzz(b"\x00asm\x01\x00\x00\x00" + data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(VALID))), st.lists(
    st.tuples(st.integers(0, 1 << 20), st.integers(0, 255), st.sampled_from("sid")),
    min_size=1, max_size=4))
def test_fuzz_mutated_modules(which, muts):
    b = bytearray(VALID[which])
    for pos, val, how in muts:
        pos %= len(b) + 1
        if how == "s" and pos < len(b):
            b[pos] = val
        elif how == "i":
            b[pos:pos] = bytes([val])
        elif pos < len(b):
            del b[pos]
    check_fuzz(bytes(b))


def test_overhead_ratios():
    """Prints metered/unmetered time; asserts only a loose bound."""
    wasm = read(os.path.join(MET, "fib.wasm"))
    ratios = []
    for _ in range(3):
        ts = []
        for metered in (False, True):
            h = Host(wasm, metered)
            t = time.perf_counter()
            h.call("fib", 25)
            ts.append(time.perf_counter() - t)
        ratios.append(ts[1] / ts[0])
    print("fib(25) metered/unmetered: %.2f" % min(ratios))
    assert min(ratios) < 5
