"""Section `native` (issue 7): wasm3 as a MicroPython native module.

(a) fib25: fib(25) in the x64 wasm3.mpy on the real MicroPython Unix port
    vs pywasm3 0.5.0 on CPython (the gateway's engine): same wasm3 sources,
    so the ratio is the cost of our build (natmod flags, -Os, no libc).
(b) heap_free_192k: gc.mem_free() under `micropython -X heapsize=192K`
    after importing the native engine and running one example module
    (counter, metered, memory capped as node/board/native.py caps it).
    Target >= 40 KiB.  On the Unix port the module's machine code is
    outside the GC heap; on a Pico W it is inside, so a second row
    subtracts the armv6m build's text: the Pico W estimate.
(c) events_per_s: a flashed simulated board (Unix port, 256 KiB heap)
    running counter, 200 sensor events from the mesh to count/total events
    back out with at most 4 in flight, native (wasm3 on the board) vs
    proxy (the module runs on an `aegis proxy` gateway; the board
    forwards).  Real Mosquitto.
"""
import json
import os
import subprocess
import sys
import time

from benchlib import ROOT, board_status as _status, median, result, target
from benchlib import wait_until as _wait

sys.path.insert(0, os.path.join(ROOT, "tests"))
SECTION = "native"
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
X64 = os.path.join(ROOT, "build", "firmware", "x64")
FIB = os.path.join(ROOT, "tests", "modules", "metering", "fib.wasm")
N_EVENTS = 200
WINDOW = 4


def _mp(script, heap, timeout=120):
    env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (ROOT, X64))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, "-c", script], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("micropython failed: " + (r.stdout + r.stderr)[-800:])
    return json.loads(r.stdout.strip().splitlines()[-1])


FIB_MP = """
import json, time
from node.board.native_engine import NativeEngine
f = NativeEngine().load(open(%r, "rb").read(), {}).find("fib")
ts = []
for i in range(%d):
    t = time.ticks_us(); r = f(25); ts.append(time.ticks_diff(time.ticks_us(), t))
    assert r == 75025
print(json.dumps(ts))
"""

HEAP_MP = """
import gc, json
gc.collect()
bare = gc.mem_free()
from node.board import native_engine as NE
w = open(%r, "rb").read()      # counter, metered on CPython
declared, touched = NE.memory_need(w)
cap = (touched + 8192 + 4095) // 4096 * 4096
out = []
fns = {"emit": ("i(iiii)", lambda *a: out.append(a) or 0),
       "state_get": ("i(iiii)", lambda *a: -1), "state_set": ("i(iiii)", lambda *a: 0)}
inst = NE.NativeEngine(stack=8192).load(w, {k: v for k, v in fns.items()
                                            if k in NE.imported_functions(w)}, mem_limit=cap)
inst.budget_setter(1000000)()
p = inst.call("aegis_alloc", 16)
inst.memory()[p:p + 16] = b"sensor/a/temp\\x18\\x15\\x00"
inst.budget_setter(1000000)()
assert inst.call("aegis_event", p, 13, p + 13, 2) == 0 and out
gc.collect()
print(json.dumps([bare, gc.mem_free(), cap]))
"""


def _fib(ctx):
    import wasm3
    n = 5 if ctx.quick else 11
    ts = _mp(FIB_MP % (FIB, n), "1M")
    env = wasm3.Environment()
    rt = env.new_runtime(64 * 1024)
    with open(FIB, "rb") as f:
        rt.load(env.parse_module(f.read()))
    fib = rt.find_function("fib")
    base = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert fib(25) == 75025
        base.append(time.perf_counter() - t0)
    return [t / 1000.0 for t in ts], [b * 1000 for b in base]


def _events(ctx, mode):
    """Events per second through a flashed board running counter."""
    import cbor2
    from broker import Broker, Subscriber
    from conftest import Signer
    from host_sim.boards import ProxyHost, UnixBoard
    from node.core import envelope as E
    d = ctx.mkdtemp("native-" + mode)
    # No Nagle on the broker's sockets nor on the bench's paho client: with
    # it, each event waited up to 40 ms for a delayed ACK somewhere between
    # them (50-750 events/s from run to run), and the board sat idle.
    b = Broker(os.path.join(d, "broker"), extra="set_tcp_nodelay true\n").start()
    op = Signer(os.path.join(d, "op"))
    sub = board = proxy = None
    node = "bn-" + mode
    try:
        sub = Subscriber(b, "aegis/test/#", nodelay=True)
        extra = {"engine": "proxy"} if mode == "proxy" else {}
        board = UnixBoard(node, os.path.join(d, "board"), b.url, [op.pub], heap="256K",
                          extra=extra).start()
        board.flash()
        _wait(lambda: _status(sub, node).get("online"), 60, "board online")
        if mode == "proxy":
            proxy = ProxyHost("gw-" + mode, os.path.join(d, "gw"), b.url, [op.pub], [node]).start()
            _wait(lambda: "proxy host connected" in proxy.logs(), 60, "proxy connected")
        pkg = os.path.join(d, "counter.pkg")
        with open(pkg, "wb") as f:
            f.write(op.example("counter"))
        r = subprocess.run([sys.executable, "-m", "node.cli.main", "push", pkg, "--to", node,
                            "--broker", b.url, "--fleet", "test", "--timeout", "120"],
                           cwd=ROOT, capture_output=True, text=True, timeout=180)
        if r.returncode != 0 or "(%s)" % mode not in r.stdout:
            raise RuntimeError("push (%s) failed: %s%s" % (mode, r.stdout, r.stderr))
        topic = "aegis/test/ev/%s/count/total" % node

        def got():
            return sum(1 for t, _ in list(sub.msgs) if t == topic)
        rates = []
        for rnd in range(1 if ctx.quick else 3):
            # A window of WINDOW events in flight: a proxied board drops
            # what does not fit its MQTT window (bounded RAM), so a burst
            # would measure drops, not throughput.
            start, sent = got(), 0
            t0 = time.perf_counter()
            deadline = time.monotonic() + 120
            while got() < start + N_EVENTS:
                while sent < N_EVENTS and sent - (got() - start) < WINDOW:
                    sent += 1
                    seq = rnd * N_EVENTS + sent
                    sub.publish("aegis/test/ev/tester/sensor/t1", E.encode(
                        "tester", seq, int(time.time() * 1000), "sensor/t1", cbor2.dumps(seq),
                        "op@1"))
                if time.monotonic() > deadline:
                    raise RuntimeError("%s: only %d of %d count/total events came back"
                                       % (mode, got() - start, N_EVENTS))
                time.sleep(0.001)
            rates.append(N_EVENTS / (time.perf_counter() - t0))
            ctx.log("  %s round %d: %.0f events/s" % (mode, rnd, rates[-1]))
        return rates
    finally:
        for x in (proxy, board, sub):
            if x is not None:
                (x.close if hasattr(x, "close") else x.stop)()
        b.kill()


def run(ctx):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "firmware", "build.py")],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError("make firmware failed: " + r.stderr[-800:])
    out = []
    nat, base = _fib(ctx)
    out.append(result(SECTION, "fib25", median(nat), "ms", median(base), "pywasm3 on CPython",
                      samples=nat, note="x64 wasm3.mpy on the MicroPython Unix port"))
    from node.core import metering
    wpath = os.path.join(ctx.mkdtemp("native-heap"), "counter.metered.wasm")
    with open(os.path.join(ROOT, "modules", "counter", "counter.wasm"), "rb") as f:
        w = metering.instrument(f.read())
    with open(wpath, "wb") as f:
        f.write(w)
    bare, free, cap = _mp(HEAP_MP % wpath, "192K")
    out.append(result(SECTION, "heap_free_192k", free / 1024, "KiB", bare / 1024,
                      "bare interpreter free", target(">=", 40),
                      note="Unix port: machine code outside the heap; counter, memory cap %d B, "
                           "stack 8 KiB" % cap))
    with open(os.path.join(ROOT, "build", "firmware", "armv6m", "link-report.json")) as f:
        text = json.load(f)["text"]
    out.append(result(SECTION, "heap_free_192k_pico_est", (free - text) / 1024, "KiB", bare / 1024,
                      "bare interpreter free", target(">=", 40),
                      note="the same minus the armv6m text (%d B), which a Pico W loads into "
                           "its GC heap" % text))
    native = _events(ctx, "native")
    proxy = _events(ctx, "proxy")
    out.append(result(SECTION, "events_per_s", median(native), "ev/s", median(proxy),
                      "proxy mode", samples=native,
                      note="flashed unix board, 256 KiB heap, counter module, %d events "
                           "mesh -> board -> mesh" % N_EVENTS))
    return out
