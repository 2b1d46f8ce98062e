"""Section "metering" (issue 5): what fuel metering costs.

- `events_<module>`: microseconds per event through the real ModuleHost
  (publish, pump, budget set before aegis_alloc and aegis_event, the
  module's own work, its emits queued and delivered) for each example
  module packed metered (as `aegis pack` does by default) against the same
  module packed unmetered, on hosts fed the same events.  Target: ratio
  (metered / unmetered time) <= 1.3.
- `fib25`: fib(25) (242 785 calls) in raw pywasm3, metered against
  unmetered: the call-heavy worst case for per-block charging.
- `spin_stop`: how long a `(loop (br 0))` runs before DEFAULT_FUEL stops
  it (issue: within about 100 ms), against the same budget's fib work.

Rounds are interleaved (unmetered, metered, ...) so noise hits both.
"""
import os

import wasm3

from benchlib import ROOT, median, now, result, settle, target

SECTION = "metering"
EXAMPLES = [("counter", "module.toml", "sensor/a/temp"),
            ("counter_v2", "module_v2.toml", "sensor/a/temp"),
            ("threshold", "module.toml", "sensor/a/temp"),
            ("movavg", "module.toml", "sensor/a/temp"),
            ("facts", "module.toml", "facts/request"),
            ("zigstats", "module.toml", "sensor/a/temp")]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _example(name, toml):
    import tomllib
    d = os.path.join(ROOT, "modules", name.split("_")[0])
    with open(os.path.join(d, toml), "rb") as f:
        t = tomllib.load(f)
    return t, _read(os.path.join(d, t["wasm"]))


def host_setup(ctx, name, toml, metered):
    from node.admission import Limits
    from node.cli.packing import prepare_wasm
    from node.core import cbor
    from node.core.memstore import MemStore
    from node.host import ModuleHost
    t, wasm = _example(name, toml)
    if metered:
        wasm = prepare_wasm(wasm, 16)
    _, _, verifiers = ctx.keys()
    host = ModuleHost(MemStore(), "bench-node", verifiers,
                      limits=Limits(allow_unmetered=True))
    host.ports = {"facts": lambda h, data: b"\xa1\x61n\x01"}
    host.install(ctx.package(t["name"], t["version"], wasm, subscribe=t["subscribe"],
                             emit=t["emit"], ports=t.get("ports", []), metered=metered))
    host.pump()
    datas = [cbor.dumps(20.0 + (i % 17) * 0.5) for i in range(64)]
    return host, datas


def host_round(st, topic, n):
    host, datas = st
    publish, pump, q = host.publish, host.pump, host.queue
    t = now()
    done = 0
    while done < n:
        for d in datas:
            publish(topic, d)
        done += len(datas)
        while q:
            pump(100000)
    dt = now() - t
    slot = next(iter(host.modules.values())).active
    assert slot.traps == 0 and slot.dropped == 0, slot.info()
    return dt / done * 1e6


def raw_setup(wasm, metered):
    from node.core import metering
    if metered:
        wasm = metering.instrument(wasm)
    env = wasm3.Environment()
    rt = env.new_runtime(64 * 1024)
    m = env.parse_module(wasm)
    rt.load(m)
    return m, rt


def fib_round(st, metered):
    from node.core import metering
    m, rt = st
    f = rt.find_function("fib")
    if metered:
        metering.set_budget(m, metering.DEFAULT_FUEL)
    t = now()
    r = f(25)
    dt = now() - t
    assert r == 75025, r
    return dt * 1000


def spin_round(st):
    from node.core import metering
    m, rt = st
    f = rt.find_function("aegis_event")
    metering.set_budget(m, metering.DEFAULT_FUEL)
    t = now()
    try:
        f(0, 0, 0, 0)
    except RuntimeError as e:
        assert "Out of gas" in str(e), e
    else:
        raise AssertionError("the spin returned")
    return (now() - t) * 1000


def run(ctx):
    rounds = ctx.rounds
    n = 3000 if ctx.quick else 12000
    out = []
    for name, toml, topic in EXAMPLES:
        plain = host_setup(ctx, name, toml, False)
        met = host_setup(ctx, name, toml, True)
        host_round(plain, topic, n // 10)       # warm-up
        host_round(met, topic, n // 10)
        p_r, m_r = [], []
        for r in range(rounds):
            settle()
            p_r.append(host_round(plain, topic, n))
            settle()
            m_r.append(host_round(met, topic, n))
            ctx.log("  %s round %d/%d: unmetered %.2f us/event, metered %.2f us/event"
                    % (name, r + 1, rounds, p_r[-1], m_r[-1]))
        out.append(result(SECTION, "events_" + name, median(m_r), "us/event", median(p_r),
                          "unmetered", tgt=target("<=", 1.3, on="ratio"), samples=m_r,
                          baseline_samples=p_r,
                          ratio_paired_median=median([m / p for m, p in zip(m_r, p_r)]),
                          note="%s through ModuleHost (publish+pump), metered vs unmetered; "
                               "events/s metered %.0f, unmetered %.0f"
                               % (name, 1e6 / median(m_r), 1e6 / median(p_r))))
    fib = _read(os.path.join(ROOT, "tests", "modules", "metering", "fib.wasm"))
    fp, fm = raw_setup(fib, False), raw_setup(fib, True)
    fib_round(fp, False)
    fib_round(fm, True)
    p_r, m_r = [], []
    for r in range(rounds):
        settle()
        p_r.append(fib_round(fp, False))
        settle()
        m_r.append(fib_round(fm, True))
    out.append(result(SECTION, "fib25", median(m_r), "ms", median(p_r), "unmetered",
                      samples=m_r, baseline_samples=p_r,
                      note="fib(25) in raw pywasm3, metered vs unmetered (call-heavy "
                           "worst case; informational)"))
    spin = _read(os.path.join(ROOT, "tests", "modules", "hostile/spin.wasm"))
    ss = raw_setup(spin, True)
    s_r = []
    for r in range(rounds):
        settle()
        s_r.append(spin_round(ss))
    out.append(result(SECTION, "spin_stop", median(s_r), "ms", None, None,
                      tgt=target("<=", 100), samples=s_r,
                      note="(loop (br 0)) stopped by DEFAULT_FUEL (20M): the longest "
                           "one call can block the node"))
    return out
