"""Metering and memory limits wired through the node: `aegis pack` meters,
the host verifies, budgets every call, refuses unmetered modules unless
allowed, and caps memory.  Every example module gives the same outputs
metered and unmetered through the real ModuleHost."""
import os
import time

import pytest

from conftest import ROOT, example, read, FIXTURES
from gateway_proc import cli
from node.admission import Limits
from node.core import cbor, metering, package as pk
from node.gateway.config import Config, ConfigError
from node.host import InstallError

EXAMPLES = [("counter", "module.toml"), ("counter", "module_v2.toml"), ("threshold", "module.toml"),
            ("movavg", "module.toml"), ("facts", "module.toml"), ("zigstats", "module.toml")]


def events():
    out = [("config/threshold", cbor.dumps(25)), ("facts/request", cbor.dumps({"q": 1})),
           ("sensor/s1/temp", b"\xff\x00"), ("sensor/s2/temp", b"")]
    for i in range(60):
        out.append(("sensor/s%d/temp" % (i % 5), cbor.dumps(i * 0.75 - 7)))
    return out


def run(host, signer, name, toml, meter):
    t, wasm = example(name, toml)
    host.ports = {"facts": lambda h, data: cbor.dumps({"node": "n1", "asked": data})}
    host.install(signer.pack(t["name"], t["version"], wasm, t["subscribe"], t["emit"],
                             t.get("ports", []), meter=meter))
    for topic, data in events():
        host.publish(topic, data)
    host.pump()
    slot = host.modules[t["name"]].active
    assert slot.traps == 0 and slot.manifest["metered"] == meter
    return [(e.topic, e.data) for e in host.seen if e.mod]


@pytest.mark.parametrize("name,toml", EXAMPLES, ids=lambda x: x)
def test_examples_same_outputs_metered_and_unmetered(make_host, signer, tmp_path, name, toml):
    metered = run(make_host(str(tmp_path / "a")), signer, name, toml, True)
    plain = run(make_host(str(tmp_path / "b"), limits=Limits(allow_unmetered=True)),
                signer, name, toml, False)
    assert metered == plain and metered       # and they did emit something


def test_unmetered_refused_unless_allowed(make_host, signer):
    h = make_host()
    with pytest.raises(InstallError, match="not metered.*allow_unmetered"):
        h.install(signer.pack("counter", "1.0.0", example("counter")[1], ["sensor/#"],
                              ["count/"], meter=False))
    assert "counter" not in h.modules


def test_manifest_must_tell_the_truth_about_metering(make_host, signer):
    h = make_host(limits=Limits(allow_unmetered=True))
    wasm = example("counter")[1]
    # Says metered, is not: refused by the verifier.
    m = pk.make_manifest("counter", "1.0.0", wasm, ["sensor/#"], ["count/"], metered=True)
    with pytest.raises(InstallError, match="not metered"):
        h.install(pk.build(m, wasm, signer.sign, signer.raw))
    # Is metered, says not: a metering import an unmetered module may not have.
    mw = metering.instrument(wasm)
    m = pk.make_manifest("counter", "1.0.0", mw, ["sensor/#"], ["count/"], metered=False)
    with pytest.raises(InstallError, match="does not say it is metered"):
        h.install(pk.build(m, mw, signer.sign, signer.raw))


def test_self_metering_module_refused(make_host, signer):
    """A module that calls usegas itself (a negative amount refills the
    budget) is refused, even signed and marked metered."""
    wat = (b'(module (import "metering" "usegas" (func $g (param i32)))'
           b' (memory (export "memory") 1)'
           b' (func (export "aegis_start") (result i32) (call $g (i32.const 1))'
           b' (call $g (i32.sub (i32.const 0) (i32.const 50000))) (i32.const 0)))')
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "s.wat"), "wb").write(wat)
        subprocess.run(["wat2wasm", os.path.join(d, "s.wat"), "-o", os.path.join(d, "s.wasm")],
                       check=True)
        w = read(os.path.join(d, "s.wasm"))
    m = pk.make_manifest("selfm", "1.0.0", w, metered=True)
    with pytest.raises(InstallError, match="may be negative"):
        make_host().install(pk.build(m, w, signer.sign, signer.raw))


def test_fuel_is_per_call_and_from_the_manifest(make_host, signer, tmp_path):
    t, wasm = example("counter")
    h = make_host()
    # Plenty of calls, each well within the default budget: no trap ever
    # (pywasm3 resets gasUsed whenever the host sets the limit).
    h.install(signer.pack("counter", "1.0.0", wasm, ["sensor/#"], ["count/"]))
    for i in range(500):
        h.publish("sensor/a/temp", cbor.dumps(i))
    h.pump()
    slot = h.modules["counter"].active
    assert slot.traps == 0 and slot.events == 500 and slot.info()["fuel"] == 20000000
    # A budget too small for one event: every event runs out of fuel.
    h2 = make_host(str(tmp_path / "store2"))
    h2.install(signer.pack("tiny", "1.0.0", wasm, ["sensor/#"], ["count/"], fuel=30))
    h2.publish("sensor/a/temp", cbor.dumps(1))
    h2.pump()
    s2 = h2.modules["tiny"].active
    assert s2.traps == 1 and "Out of gas" in s2.last_error


def test_spin_stopped_within_its_own_budget(make_host, signer):
    """A spin stops after the manifest's fuel: 10x less fuel, ~10x sooner."""
    h = make_host()
    spin = read(os.path.join(FIXTURES, "hostile/spin.wasm"))
    times = {}
    for fuel in (2000000, 20000000):
        name = "spin%d" % fuel
        h.install(signer.pack(name, "1.0.0", spin, ["in/%s" % name], [], fuel=fuel))
        best = 1e9
        for _ in range(3):
            h.publish("in/%s" % name, b"")
            t0 = time.perf_counter()
            h.pump()
            best = min(best, time.perf_counter() - t0)
        times[fuel] = best
        failed = [m for m in h.module_list() if m["name"] == name]
        assert failed and "Out of gas" in failed[0]["last_error"]
    print("spin stopped after %.1f ms (2M fuel), %.1f ms (20M fuel)"
          % (times[2000000] * 1000, times[20000000] * 1000))
    assert times[20000000] < 0.1
    assert times[2000000] < times[20000000] / 3


def test_node_limits_refuse_greedy_manifests(make_host, signer):
    h = make_host(limits=Limits(fuel_max=1000000, memory_pages_max=8))
    wasm = example("counter")[1]
    with pytest.raises(InstallError, match="20000000 fuel per call; this node allows at most 1000000"):
        h.install(signer.pack("counter", "1.0.0", wasm, ["sensor/#"], ["count/"],
                              memory_pages=8))
    with pytest.raises(InstallError, match="16 memory pages; this node allows at most 8"):
        h.install(signer.pack("counter", "1.0.0", wasm, ["sensor/#"], ["count/"], fuel=1000))
    h.install(signer.pack("counter", "1.0.0", wasm, ["sensor/#"], ["count/"], fuel=1000000,
                          memory_pages=8))


def test_memory_cap_applies_to_unmetered_modules_too(make_host, signer):
    """A package packed by other means (unmetered, no declared maximum) is
    still capped by the node: the bomb stops at limits.memory_pages."""
    h = make_host(limits=Limits(allow_unmetered=True))
    bomb = read(os.path.join(FIXTURES, "hostile/membomb.wasm"))
    h.install(signer.pack("bomb", "1.0.0", bomb, ["in/#"], ["bomb/"], meter=False,
                          memory_pages=3))
    h.publish("in/x", b"")
    h.pump()
    got = [e.data for e in h.seen if e.topic == "bomb/pages"]
    assert got == [(3).to_bytes(4, "little")]
    assert len(h.modules["bomb"].active.inst.memory()) == 3 * 65536


def test_config_limits_table():
    base = {"node_id": "n", "fleet": "f", "store_dir": "s", "control_socket": "c",
            "trusted_keys": ["k.pub"]}
    c = Config(dict(base))
    assert (c.limits.allow_unmetered, c.limits.fuel_max, c.limits.memory_pages_max) == \
        (False, 200000000, 1024)
    c = Config(dict(base, limits={"allow_unmetered": True, "fuel_max": 5}))
    assert c.limits.allow_unmetered and c.limits.fuel_max == 5
    for bad, msg in (({"allow_unmetered": 1}, "true or false"), ({"fuel_max": 0}, "fuel_max"),
                     ({"memory_pages_max": 70000}, "memory_pages_max"), ({"x": 1}, "unknown")):
        with pytest.raises(ConfigError, match=msg):
            Config(dict(base, limits=bad))


def test_cli_pack_meters_by_default(signer, tmp_path):
    out = str(tmp_path / "c.pkg")
    wasm = os.path.join(ROOT, "modules/counter/counter.wasm")
    r = cli("pack", wasm, "--name", "counter", "--version", "1.0.0", "--key",
            signer.prefix + ".key", "--out", out)
    assert "metered:" in r.stdout and "fuel 20000000" in r.stdout
    hdr = pk.parse_header(read(out))
    assert hdr.manifest["metered"] is True and hdr.manifest["limits"]["fuel"] == 20000000
    wasm_in = read(out)[hdr.wasm_offset:]
    assert metering.is_metered(wasm_in)
    from node.core import memcap, meterverify
    meterverify.verify(wasm_in)
    assert memcap.memory_max(wasm_in) == 16
    r = cli("pack", wasm, "--name", "counter", "--version", "1.0.0", "--no-meter", "--key",
            signer.prefix + ".key", "--out", out)
    assert "NOT metered" in r.stdout
    assert pk.parse_header(read(out)).manifest["metered"] is False
    # A module the pass cannot meter is refused with the reason.
    bad = str(tmp_path / "simd.wasm")
    open(bad, "wb").write(b"\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00"
                          b"\x0a\x07\x01\x05\x00\xfd\x0c\x0b\x0b")
    r = cli("pack", bad, "--name", "x", "--version", "1.0.0", "--key", signer.prefix + ".key",
            "--out", out, check=False)
    assert r.returncode == 1 and "cannot pack" in r.stderr


def test_restore_of_an_unmetered_module_follows_the_node_limits(make_host, signer, tmp_path):
    """A store from before metering: unmetered packages are not restored on a
    node that refuses them (logged, the node starts), and are with allow."""
    store = str(tmp_path / "old")
    h = make_host(store, limits=Limits(allow_unmetered=True))
    h.install(signer.pack("counter", "1.0.0", example("counter")[1], ["sensor/#"], ["count/"],
                          meter=False))
    h.flush()
    strict = make_host(store)
    strict.restore()
    assert strict.modules["counter"].active is None
    assert any(msg == "cannot restore module" and "not metered" in kw["error"]
               for lv, msg, kw in strict.lines)
    lax = make_host(store, limits=Limits(allow_unmetered=True))
    lax.restore()
    assert lax.modules["counter"].active.version == "1.0.0"
