"""Hostile modules against a real `aegis gateway` process.

For each attack: the node keeps serving another module (the counter example
counts every sensor event sent during the attack), the previous good
version of the attacked module is the active one afterwards, and the
gateway's event loop was never blocked longer than about one fuel budget:
a thread probes the control socket (`status`) all through the attack and
the slowest answer is compared with the time one budget of a spin takes on
this machine, measured in the same run.
"""
import os
import threading
import time

import pytest

from conftest import FIXTURES, read
from gateway_proc import gw, wait_for  # noqa: F401 (gw: fixture)
from node.control import Client
from node.core import cbor

# A budget's worth of `(loop (br 0))` takes 33-52 ms here (docs/METERING.md).
# The gateway's own measure (status "pump_max_ms", the longest slice of
# event handling) may exceed one budget by a little (the charge is paid up
# front, the rest of the slice); a status answer seen from the test process
# also waits for the machine (2 cores, shared): allowed on top of a budget.
PUMP_SLACK_S = 0.03
SLACK_S = 0.25


class Probe(threading.Thread):
    """Asks the gateway for `status` every few ms; keeps the worst latency."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.client = Client(sock, timeout=30)
        self.stop_ev = threading.Event()
        self.worst = 0.0
        self.n = 0

    def run(self):
        for _ in range(100000):             # bounded; stopped long before
            if self.stop_ev.is_set():
                break
            t0 = time.perf_counter()
            self.client.request("status")
            self.worst = max(self.worst, time.perf_counter() - t0)
            self.n += 1
            self.stop_ev.wait(0.003)

    def finish(self):
        self.stop_ev.set()
        self.join(30)
        self.client.close()
        return self.worst


def budget_time_s():
    """CPU seconds one default fuel budget of a spin takes here (best of 3)."""
    import wasm3
    from node.core import metering
    w = metering.instrument(read(os.path.join(FIXTURES, "hostile/spin.wasm")))
    env = wasm3.Environment()
    rt = env.new_runtime(64 * 1024)
    mod = env.parse_module(w)
    rt.load(mod)
    f = rt.find_function("aegis_event")
    best = 1e9
    for _ in range(3):
        metering.set_budget(mod, metering.DEFAULT_FUEL)
        t0 = time.thread_time()
        with pytest.raises(RuntimeError, match="Out of gas"):
            f(0, 0, 0, 0)
        best = min(best, time.thread_time() - t0)
    return best


@pytest.fixture(scope="module")
def one_budget():
    return budget_time_s()


def _install(c, data, ok=True):
    c.send({"op": "install", "package": data})
    r = c.recv()
    assert bool(r.get("ok")) == ok, r
    return r


def _module(c, name):
    mods = c.request("modules")["modules"]
    act = [m for m in mods if m["name"] == name and m["state"] == "running"]
    return act[0] if act else None, mods


def _emit(c, topic, data):
    """Emit, waiting while the node's event queue is full (a flooding
    module fills it: the node says so, and the sender tries again)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return c.request("emit", topic=topic, data=data)
        except Exception as e:
            if "queue full" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _count(c):
    evs = c.request("events", topic="count/total", last=100000)["events"]
    return max([e["data"] for e in evs] or [0])


def attack(gw, signer, fixture, events=6, rolls_back=True, one_budget=0.05, install_ok=True,
           **manifest):
    """Install good h@1.0.0 and the counter, then hostile h@2.0.0, send it
    events (interleaved with sensor events for the counter) while probing
    the control socket.  Returns (worst latency, install answer, client)."""
    c = Client(gw.sock)
    _install(c, signer.fixture("echo.wasm", name="h", version="1.0.0", emit=("echo/",)))
    _install(c, signer.example("counter"))
    probe = Probe(gw.sock)
    probe.start()
    wait_for(lambda: probe.n > 0, what="first probe")
    emit = manifest.pop("emit", ("out/",))
    r = _install(c, signer.fixture(fixture, name="h", version="2.0.0", emit=emit, **manifest),
                 ok=install_ok)
    sent = 0
    if r.get("ok"):
        for i in range(events):
            _emit(c, "in/x", cbor.dumps(i))
            _emit(c, "sensor/k/temp", cbor.dumps(20.0))
            sent += 1
        if rolls_back:
            wait_for(lambda: _module(c, "h")[0]["version"] == "1.0.0", timeout=30,
                     what="rollback to h@1.0.0")
    else:
        for i in range(events):
            _emit(c, "sensor/k/temp", cbor.dumps(20.0))
            sent += 1
    wait_for(lambda: _count(c) >= sent, timeout=30, what="counter saw every sensor event")
    worst = probe.finish()
    # The machine's speed now (2 shared cores): the budget measured again.
    one_budget = max(one_budget, budget_time_s())
    st = c.request("status")
    pump_max, pump_cpu = st["pump_max_ms"] / 1000, st["pump_max_cpu_ms"] / 1000
    print("%s: worst status latency %.1f ms over %d probes, longest event slice %.1f ms "
          "(%.1f ms CPU), one budget %.1f ms CPU" % (fixture, worst * 1000, probe.n,
                                                     pump_max * 1000, pump_cpu * 1000,
                                                     one_budget * 1000))
    assert pump_cpu <= one_budget * 1.5 + PUMP_SLACK_S, \
        "events held the loop %.0f ms CPU (one budget: %.0f ms)" % (pump_cpu * 1000,
                                                                   one_budget * 1000)
    assert worst <= one_budget + SLACK_S, \
        "control socket blocked %.0f ms (one budget: %.0f ms)" % (worst * 1000, one_budget * 1000)
    assert _count(c) == sent                      # every one counted, exactly once
    return worst, r, c


def test_infinite_loop_is_stopped_and_rolled_back(gw, signer, one_budget):
    """The issue's "done when": (loop (br 0)) as the event handler."""
    worst, r, c = attack(gw, signer, "hostile/spin.wasm", one_budget=one_budget)
    act, mods = _module(c, "h")
    assert act["version"] == "1.0.0"
    bad = [m for m in mods if m["name"] == "h" and m["version"] == "2.0.0"][0]
    assert bad["state"] == "rolled_back" and "Out of gas" in bad["last_error"]
    assert bad["traps"] == 3
    # The rolled-back version cannot come back by replaying its package.
    c.send({"op": "install", "package": signer.fixture("hostile/spin.wasm", name="h",
                                                      version="2.0.0")})
    r = c.recv()
    assert not r["ok"] and "was rolled back" in r["error"]
    logs = gw.logs()
    assert '"rolled back"' in logs and "Out of gas" in logs
    c.close()


def test_spinning_start_is_refused_within_a_budget(gw, signer, one_budget):
    worst, r, c = attack(gw, signer, "hostile/spin_start.wasm", rolls_back=False,
                         install_ok=False, one_budget=one_budget)
    assert "aegis_start trapped: Out of gas" in r["error"] and "still running 1.0.0" in r["error"]
    assert _module(c, "h")[0]["version"] == "1.0.0"
    c.close()


def test_deep_recursion_traps_and_rolls_back(gw, signer, one_budget):
    worst, r, c = attack(gw, signer, "hostile/recurse.wasm", one_budget=one_budget)
    mods = _module(c, "h")[1]
    bad = [m for m in mods if m["name"] == "h" and m["version"] == "2.0.0"][0]
    assert bad["state"] == "rolled_back" and bad["last_error"]
    c.close()


def test_memory_bomb_stops_at_the_limit(gw, signer, one_budget):
    worst, r, c = attack(gw, signer, "hostile/membomb.wasm", rolls_back=False,
                         emit=("bomb/",), memory_pages=4, one_budget=one_budget)
    act, _ = _module(c, "h")
    assert act["version"] == "2.0.0" and act["traps"] == 0     # not an error: grow says -1
    evs = c.request("events", topic="bomb/pages", last=1000)["events"]
    assert evs and all(e["data_format"] == "bytes" for e in evs)
    pages = {int.from_bytes(e["data"], "little") for e in evs}
    assert pages == {4}, pages
    c.close()


def test_oversized_initial_memory_is_refused(gw, signer, one_budget):
    c = Client(gw.sock)
    _install(c, signer.fixture("echo.wasm", name="h", version="1.0.0", emit=("echo/",)))
    r = _install(c, signer.fixture("hostile/bigmem.wasm", name="h", version="2.0.0",
                                   meter=False), ok=False)
    assert "1000 memory pages, its limit is 16" in r["error"]
    # Asking for the pages in the manifest hits the node's own maximum.
    r = _install(c, signer.fixture("hostile/bigmem.wasm", name="h", version="2.0.0",
                                   memory_pages=2000, meter=False), ok=False)
    assert "this node allows at most 1024" in r["error"]
    assert _module(c, "h")[0]["version"] == "1.0.0"
    c.close()


def test_forbidden_import_is_refused(gw, signer):
    c = Client(gw.sock)
    _install(c, signer.fixture("echo.wasm", name="h", version="1.0.0", emit=("echo/",)))
    for fx in ("forbidden_import.wasm", "forbidden_import_aegis.wasm"):
        r = _install(c, signer.fixture(fx, name="h", version="2.0.0"), ok=False)
        assert "not in ABI v1" in r["error"]
    assert _module(c, "h")[0]["version"] == "1.0.0"
    c.close()


def test_emit_outside_prefix_is_denied(gw, signer, one_budget):
    worst, r, c = attack(gw, signer, "emit_outside.wasm", rolls_back=False,
                         one_budget=one_budget)
    act, _ = _module(c, "h")
    assert act["version"] == "2.0.0" and act["denied"] >= 6 and act["traps"] == 0
    assert not c.request("events", topic="secret/#", last=100000)["events"]
    c.close()


def test_huge_outputs_are_bounded(gw, signer, one_budget):
    worst, r, c = attack(gw, signer, "hostile/flood.wasm", rolls_back=False, events=3,
                         emit=("flood/",), one_budget=one_budget)
    act, _ = _module(c, "h")
    assert act["version"] == "2.0.0" and act["traps"] == 0
    assert len(c.request("events", topic="flood/#", last=1000)["events"]) > 900
    assert not [e for e in c.request("events", topic="flood/#", last=100)["events"]
                if len(e["data"]) > 65536]
    logs = gw.logs()
    assert max(len(x) for x in logs.splitlines()) < 8192   # log text truncated at 1 KiB
    c.close()


def test_trap_storm_rolls_back(gw, signer, one_budget):
    worst, r, c = attack(gw, signer, "trap_always.wasm", one_budget=one_budget)
    mods = _module(c, "h")[1]
    bad = [m for m in mods if m["name"] == "h" and m["version"] == "2.0.0"][0]
    assert bad["state"] == "rolled_back" and "unreachable" in bad["last_error"]
    c.close()


def test_host_call_spins_are_stopped(gw, signer, one_budget):
    """Spins on each host function (emit ignoring a full queue, state_set,
    state_get, log, now_ms): host calls are priced so that each is stopped
    in about a budget's time as well."""
    worst, r, c = attack(gw, signer, "hostile/hostspin.wasm", emit=("spin/",),
                         one_budget=one_budget)
    mods = _module(c, "h")[1]
    bad = [m for m in mods if m["name"] == "h" and m["version"] == "2.0.0"][0]
    assert bad["state"] == "rolled_back" and "Out of gas" in bad["last_error"]
    c.close()
