"""Section "runtime" (issue 2): ceiling, dispatch throughput, hot-swap time.

All throughput rounds are interleaved (ceiling, raw echo, dispatch, ...) so
a noisy neighbour hits the baseline and the measured path alike; the ratio
is median(value) / median(baseline) over the same rounds.
"""
import functools
import os

import wasm3

from benchlib import (CEIL_WASM, echo_wasm, median, now, pad_wasm, pctl,
                      result, settle, target)

SECTION = "runtime"
BATCH = 1000            # events published before each pump (gateway-style)
IN_PREFIX = "bench/in/"
N_TOPICS = 8            # distinct topics (the bus caches matches per topic)
DATA = b"\x01" * 16     # event payload
SWAP_SIZE = 64 * 1024
STACK = 64 * 1024


def _noop_emit(tp, tl, dp, dl):
    return 0


# --------------------------------------------------------------------------
# 1. ceiling: raw pywasm3 Python -> wasm -> Python host -> wasm -> Python

def ceiling_setup():
    env = wasm3.Environment()
    rt = env.new_runtime(STACK)
    m = env.parse_module(CEIL_WASM)
    rt.load(m)
    mem = functools.partial(rt.get_memory, 0)

    # The least any ABI host function does: fetch memory (a grow makes old
    # views stale) and copy the byte ranges it was handed.
    def emit(tp, tl, dp, dl):
        mv = mem()
        bytes(mv[tp:tp + tl])
        bytes(mv[dp:dp + dl])
        return 0
    m.link_function("aegis", "emit", "i(iiii)", emit)
    f = rt.find_function("run")
    assert f() == 0
    return (env, rt, m, f)


def ceiling_round(st, n):
    f = st[3]
    t = now()
    for _ in range(n):
        f()
    return n / (now() - t)


# --------------------------------------------------------------------------
# The ceiling: one event's raw pywasm3 host round trip.  The same echo.wasm
# and the same wasm work per event as Slot.deliver + HostABI.emit (alloc,
# write topic+data, aegis_event, whose emit host function reads them back),
# written as directly as pywasm3 allows: no bus, no queue, no checks.  This
# is the "Python -> wasm -> Python host round trip" a node cannot beat.

def raw_echo_setup(wasm):
    env = wasm3.Environment()
    rt = env.new_runtime(STACK)
    m = env.parse_module(bytes(wasm))
    rt.load(m)
    got = [0]

    def emit(tp, tl, dp, dl):
        mem = rt.get_memory(0)
        bytes(mem[tp:tp + tl])
        bytes(mem[dp:dp + dl])
        got[0] += 1
        return 0
    m.link_function("aegis", "emit", "i(iiii)", emit)
    return (env, rt, m, rt.find_function("aegis_alloc"),
            rt.find_function("aegis_event"), got)


def raw_echo_round(st, n):
    _, rt, _, alloc, event, got = st
    topics = [(IN_PREFIX + "t%d" % i).encode() for i in range(N_TOPICS)]
    data = DATA
    got[0] = 0
    t = now()
    for i in range(n):
        tb = topics[i % N_TOPICS]
        tl = len(tb)
        k = tl + len(data)
        p = alloc(k)
        mem = rt.get_memory(0)
        mem[p:p + tl] = tb
        mem[p + tl:p + k] = data
        event(p, tl, p + tl, k - tl)
    dt = now() - t
    assert got[0] == n, (got[0], n)
    return n / dt


# --------------------------------------------------------------------------
# 2. dispatch through the node: CBOR bytes in -> cbor.loads -> host.publish
#    -> host.pump -> echo module -> emit -> queued -> delivered to a tap.

def make_inputs(n):
    """Envelope-shaped CBOR maps, as they arrive from the mesh."""
    from node.core import cbor
    return [cbor.dumps({"src": "peer-1", "seq": i, "ts": 1700000000000 + i,
                        "topic": IN_PREFIX + "t%d" % (i % N_TOPICS),
                        "data": DATA, "mod": ""}) for i in range(n)]


def dispatch_setup(ctx, wasm, store=None):
    from node.core.memstore import MemStore
    from node.admission import Limits
    from node.host import ModuleHost
    _, _, verifiers = ctx.keys()
    host = ModuleHost(store or MemStore(), "bench-node", verifiers,
                      limits=Limits(allow_unmetered=True))  # raw dispatch; see sec_metering
    pkg = ctx.package("echo", "1.0.0", wasm, subscribe=[IN_PREFIX + "#"],
                      emit=["echo/" + IN_PREFIX], ports=[])
    host.install(pkg)
    host.pump()  # the install's $aegis/ event
    counter = [0]
    out_prefix = "echo/" + IN_PREFIX

    def tap(ev):
        if ev.topic.startswith(out_prefix):
            counter[0] += 1
    host.taps.append(tap)
    return host, counter


def dispatch_round(host, counter, inputs, batches):
    from node.core import cbor
    loads = cbor.loads
    publish = host.publish
    pump = host.pump
    q = host.queue
    counter[0] = 0
    t = now()
    for _ in range(batches):
        for b in inputs:
            e = loads(b)
            publish(e["topic"], e["data"], e["src"])
        while q:
            pump(100000)
    dt = now() - t
    n = batches * len(inputs)
    assert counter[0] == n, "tap saw %d of %d echoes" % (counter[0], n)
    return n / dt


# --------------------------------------------------------------------------
# 3. hot swap of a 64 KiB module

def raw_instantiate(wasm):
    """Baseline: what any swap must do at least - wasm3 parse+load+link of
    the same bytes and one call into it."""
    t = now()
    env = wasm3.Environment()
    rt = env.new_runtime(STACK)
    m = env.parse_module(wasm)
    rt.load(m)
    m.link_function("aegis", "emit", "i(iiii)", _noop_emit)
    rt.find_function("aegis_alloc")(8)
    return (now() - t) * 1000


def raw_fsync_write(d, data, i):
    """Baseline part for DirStore: one atomic, fsynced write of the package
    (temp + fsync + rename + directory fsync), as the store must do once."""
    t = now()
    path = os.path.join(d, "raw-%d.pkg" % i)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return (now() - t) * 1000


def hotswap(ctx, base_wasm, store_kind, n_swaps):
    from node.core.memstore import MemStore
    from node.admission import Limits
    from node.host import ModuleHost
    from node.store import DirStore
    _, _, verifiers = ctx.keys()
    if store_kind == "dir":
        store = DirStore(ctx.mkdtemp("hotswap-store"))
        rawdir = ctx.mkdtemp("hotswap-raw")
    else:
        store = MemStore()
        rawdir = None
    name = "swapper"
    versions = ["1.0.%d" % i for i in range(n_swaps + 1)]
    wasms = [pad_wasm(base_wasm, SWAP_SIZE, v.encode()) for v in versions]
    pkgs = [ctx.package(name, v, w, subscribe=[IN_PREFIX + "#"],
                        emit=["echo/" + IN_PREFIX], ports=[])
            for v, w in zip(versions, wasms)]
    host = ModuleHost(store, "bench-node", verifiers,
                      limits=Limits(allow_unmetered=True))  # raw dispatch; see sec_metering
    seen = []
    host.taps.append(lambda ev: seen.append(ev.mod) if ev.topic.startswith("echo/") else None)
    host.install(pkgs[0])
    host.pump()
    swap_ms, base_ms, install_ms = [], [], []
    for i in range(1, n_swaps + 1):
        settle()
        # Interleave the baseline with the measurement.
        b = raw_instantiate(wasms[i])
        if rawdir:
            b += raw_fsync_write(rawdir, pkgs[i], i)
        base_ms.append(b)
        del seen[:]
        t0 = now()
        r = host.install(pkgs[i])
        t1 = now()
        host.publish(IN_PREFIX + "swap", DATA)
        host.pump()
        t2 = now()
        slot = host.modules[name].active
        label = "%s@%s" % (name, versions[i])
        if not (r.get("changed") and slot.version == versions[i] and slot.events == 1
                and seen == [label]):
            raise AssertionError("swap to %s not confirmed: %r active=%s events=%d seen=%r"
                                 % (versions[i], r, slot.version, slot.events, seen))
        swap_ms.append((t2 - t0) * 1000)
        install_ms.append((t1 - t0) * 1000)
    return swap_ms, install_ms, base_ms, len(wasms[1]), len(pkgs[1])


# --------------------------------------------------------------------------

def run(ctx):
    rounds = ctx.rounds
    wasm, wasm_src = echo_wasm()
    # Sized for ~0.1 s (quick) / ~0.3-0.5 s (full) per round on a laptop-class
    # core: long enough to average out timer and scheduler noise.
    ceil_n = 300000 if ctx.quick else 1000000
    echo_n = 50000 if ctx.quick else 150000
    batches = 10 if ctx.quick else 40
    inputs = make_inputs(BATCH)

    ceil = ceiling_setup()
    raw = raw_echo_setup(wasm)
    host, counter = dispatch_setup(ctx, wasm)
    # warm-up (not counted)
    ceiling_round(ceil, ceil_n // 10)
    raw_echo_round(raw, echo_n // 10)
    dispatch_round(host, counter, inputs, 1)

    c_r, e_r, d_r = [], [], []
    for r in range(rounds):
        settle()
        c_r.append(ceiling_round(ceil, ceil_n))
        settle()
        e_r.append(raw_echo_round(raw, echo_n))
        settle()
        d_r.append(dispatch_round(host, counter, inputs, batches))
        ctx.log("  round %d/%d: bare call %.0f/s  ceiling (raw event round trip) %.0f/s  dispatch %.0f/s"
                % (r + 1, rounds, c_r[-1], e_r[-1], d_r[-1]))
    c, e, d = median(c_r), median(e_r), median(d_r)
    per_round = [di / ei for di, ei in zip(d_r, e_r)]
    out = [
        result(SECTION, "ceiling", e, "events/s", e, "ceiling", samples=e_r,
               note="raw pywasm3 host round trip per event: %s driven directly "
                    "(alloc, write topic+data, aegis_event, emit reading them), "
                    "no node code" % wasm_src),
        result(SECTION, "bare_call", c, "calls/s", e, "ceiling", samples=c_r,
               note="informational: Python->wasm->Python host fn that only "
                    "fetches memory and copies its two ranges"),
        result(SECTION, "dispatch", d, "events/s", e, "ceiling",
               tgt=target(">=", 0.25, on="ratio"), samples=d_r,
               ratio_per_round=per_round, ratio_paired_median=median(per_round),
               ratio_vs_bare_call=d / c,
               note="cbor.loads -> host.publish -> host.pump -> %s -> emit -> tap; "
                    "batches of %d, %d topics, %d B data"
                    % (wasm_src, BATCH, N_TOPICS, len(DATA))),
    ]
    del host

    n_swaps = 20 if ctx.quick else 8 * rounds
    n_swaps = max(n_swaps, 20)
    for kind in ("dir", "mem"):
        swap, inst, base, wsize, psize = hotswap(ctx, wasm, kind, n_swaps)
        ctx.log("  hot-swap %s: median %.2f ms  p90 %.2f ms  (baseline %.2f ms, %d swaps)"
                % (kind, median(swap), pctl(swap, 90), median(base), len(swap)))
        bname = "raw wasm3 instantiate" + (" + fsynced atomic write" if kind == "dir" else "")
        note = ("install(%d B pkg, %d B wasm) -> publish -> pump until the new version "
                "handled the event; %s" % (psize, wsize,
                                         "DirStore in a temp dir (fsync)" if kind == "dir"
                                         else "MemStore"))
        out.append(result(SECTION, "hotswap_%s_median" % kind, median(swap), "ms",
                          median(base), bname, tgt=target("<", 20.0), samples=swap,
                          install_only_median_ms=median(inst), note=note))
        out.append(result(SECTION, "hotswap_%s_p90" % kind, pctl(swap, 90), "ms",
                          pctl(base, 90), bname + " (p90)", note="p90 of the same swaps"))
    return out
