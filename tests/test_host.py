"""The module host with real wasm3, real modules, real signatures and a real
directory store: install, events, hot-swap, rollback, state, bad input."""
import pytest

from node.core import cbor
from node.host import InstallError
from conftest import read, FIXTURES


def topics(host, prefix):
    return [e for e in host.seen if e.topic.startswith(prefix)]


def feed(host, n, topic="sensor/k1/temp", value=20.0):
    for _ in range(n):
        host.publish(topic, cbor.dumps(value))
    host.pump()


def test_threshold_alarm_and_state(make_host, signer):
    h = make_host()
    r = h.install(signer.example("threshold"))
    assert r["state"] == "running" and r["changed"]
    feed(h, 1, value=25.0)
    assert topics(h, "alarm/") == []
    feed(h, 1, value=31.5)
    alarms = topics(h, "alarm/")
    assert [e.topic for e in alarms] == ["alarm/k1"]
    assert cbor.loads(alarms[0].data) == {"value": 31.5, "threshold": 30.0}
    assert alarms[0].mod == "threshold@1.0.0" and alarms[0].src == "n1"
    feed(h, 1, value=10)
    assert [e.topic for e in topics(h, "alarm/")] == ["alarm/k1", "alarm/k1/clear"]
    # The threshold lives in durable state: a new host on the same store keeps it.
    h.publish("config/threshold", cbor.dumps(40))
    h.pump()
    h.flush()
    h2 = make_host()
    h2.restore()
    assert h2.modules["threshold"].active.version == "1.0.0"
    feed(h2, 1, value=35.0)
    assert topics(h2, "alarm/") == []
    feed(h2, 1, value=41)
    assert cbor.loads(topics(h2, "alarm/")[0].data)["threshold"] == 40.0


def test_movavg(make_host, signer):
    h = make_host()
    h.install(signer.example("movavg"))
    for v in [1, 2, 3, 4.5]:
        h.publish("sensor/a/temp", cbor.dumps(v))
    h.pump()
    avgs = [cbor.loads(e.data) for e in topics(h, "avg/a")]
    assert avgs == [1.0, 1.5, 2.0, 2.625]


def test_hot_swap_mid_stream_loses_nothing(make_host, signer):
    h = make_host()
    h.install(signer.example("counter"))
    sent = 0
    for i in range(500):
        h.publish("sensor/s%d/temp" % (i % 3), cbor.dumps(i))
        sent += 1
        if i == 250:
            # Half the events are still queued when v2 is installed.
            h.pump(120)
            r = h.install(signer.example("counter", "module_v2.toml"))
            assert r["replaced"] == "1.0.0" and r["version"] == "2.0.0"
    h.pump()
    counts = [cbor.loads(e.data) for e in topics(h, "count/total")]
    assert counts == list(range(1, sent + 1)), "an event was lost or handled twice"
    mods = {e.mod for e in topics(h, "count/total")}
    assert mods == {"counter@1.0.0", "counter@2.0.0"}
    assert any("counter v2 started" in line[1] for line in h.lines)
    assert h.modules["counter"].previous == "1.0.0"


def test_trap_storm_rolls_back_to_previous(make_host, signer):
    h = make_host(max_traps=3, trap_window_ms=10000)
    h.install(signer.fixture("stateful.wasm", name="m", version="1.0.0", emit=("state/",)))
    feed(h, 2, topic="in/x")
    # 1.1.0 traps on every event.
    h.install(signer.fixture("trap_always.wasm", name="m", version="1.1.0"))
    feed(h, 3, topic="in/x")
    mod = h.modules["m"]
    assert mod.active.version == "1.0.0" and mod.active.life.state == "running"
    listed = {(m["version"], m["state"]) for m in h.module_list()}
    assert ("1.1.0", "rolled_back") in listed
    assert h.counts["rollbacks"] == 1
    assert [e.topic for e in h.seen if e.topic.startswith("$aegis/module/m/rolled_back")]
    # The restored version keeps serving with its state intact.
    feed(h, 1, topic="in/x")
    vals = [int.from_bytes(e.data, "little") for e in topics(h, "state/n")]
    assert vals == [1, 2, 3]


def test_trap_window_is_configurable(make_host, signer):
    h = make_host(max_traps=2, trap_window_ms=1000)
    h.install(signer.fixture("stateful.wasm", name="m", version="1.0.0", emit=("state/",)))
    h.install(signer.fixture("trap_always.wasm", name="m", version="1.1.0"))
    feed(h, 1, topic="in/x")
    h.clock.t += 5000
    feed(h, 1, topic="in/x")
    assert h.modules["m"].active.version == "1.1.0"  # 2 traps, 5 s apart
    feed(h, 1, topic="in/x")
    assert h.modules["m"].active.version == "1.0.0"


def test_first_version_trapping_fails_without_taking_node_down(make_host, signer):
    h = make_host()
    h.install(signer.fixture("trap_always.wasm", name="bad"))
    h.install(signer.example("counter"))
    feed(h, 5, topic="in/x")
    feed(h, 2)
    assert h.modules["bad"].active is None
    assert [m["state"] for m in h.module_list() if m["name"] == "bad"] == ["failed"]
    assert [cbor.loads(e.data) for e in topics(h, "count/total")] == [1, 2]


def test_start_refused_keeps_running_version_and_state(make_host, signer):
    h = make_host()
    h.install(signer.example("counter"))
    feed(h, 3)
    before = dict(h.states["counter"].data)
    with pytest.raises(InstallError, match="aegis_start refused.*still running 1.0.0"):
        h.install(signer.fixture("start_fails.wasm", name="counter", version="1.5.0",
                                 subscribe=("sensor/#",)))
    assert h.modules["counter"].active.version == "1.0.0"
    assert h.states["counter"].data == before
    feed(h, 1)
    assert cbor.loads(topics(h, "count/total")[-1].data) == 4


@pytest.mark.parametrize("fname,msg", [
    ("forbidden_import.wasm", "not in ABI v1"),
    ("forbidden_import_aegis.wasm", "not in ABI v1"),
    ("no_memory.wasm", "export its memory"),
    ("invalid.wasm", "wasm"),
])
def test_bad_modules_refused_running_untouched(make_host, signer, fname, msg):
    h = make_host()
    h.install(signer.example("counter"))
    feed(h, 2)
    with pytest.raises(InstallError, match=msg):
        h.install(signer.pack("counter", "9.0.0", read(FIXTURES + "/" + fname), ["sensor/#"]))
    assert h.modules["counter"].active.version == "1.0.0"
    feed(h, 1)
    assert cbor.loads(topics(h, "count/total")[-1].data) == 3


def test_bad_packages_refused(make_host, signer, tmp_path):
    from conftest import Signer
    h = make_host()
    good = signer.example("counter")
    h.install(good)
    stranger = Signer(str(tmp_path / "stranger"))
    cases = [
        (stranger.example("counter", version="2.0.0"), "unknown key"),
        (good[:-10], "truncated"),
        (good[:-1] + bytes([good[-1] ^ 0xFF]), "hash does not match"),
        (b"", "bad magic"),
        (b"AEGISPK1\x00\x00\x00\x05abc", "truncated"),
        (b"AEGISPK1" + b"\x00\x00\x00\x01\xa0" + b"\x00" * 10, "lacks manifest"),
    ]
    # A valid signature from one key spliced onto another's manifest.
    from node.core import package as pk
    hdr = pk.parse_header(stranger.example("counter", version="3.0.0"))
    good_hdr = pk.parse_header(good)
    spliced_hdr = cbor.dumps({"manifest": hdr.manifest_bytes, "sig": good_hdr.sig,
                              "kid": good_hdr.kid})
    spliced = pk.MAGIC + len(spliced_hdr).to_bytes(4, "big") + spliced_hdr + good[good_hdr.wasm_offset:]
    cases.append((spliced, "bad signature"))
    for data, msg in cases:
        with pytest.raises(InstallError, match=msg):
            h.install(data)
    assert h.modules["counter"].active.version == "1.0.0"


def test_versions_downgrade_and_noop(make_host, signer):
    h = make_host()
    h.install(signer.example("counter", version="1.2.0"))
    r = h.install(signer.example("counter", version="1.2.0"))
    assert r["changed"] is False
    with pytest.raises(InstallError, match="older than the active 1.2.0"):
        h.install(signer.example("counter", version="1.1.0"))
    r = h.install(signer.example("counter", version="1.1.0"), rollback=True)
    assert r["version"] == "1.1.0"


def test_emit_outside_prefix_is_an_error_for_the_module(make_host, signer):
    h = make_host()
    h.install(signer.fixture("emit_outside.wasm", name="snoop", emit=("out/",)))
    feed(h, 2, topic="in/x")
    assert not [e for e in h.seen if e.topic.startswith("secret/")]
    info = [m for m in h.module_list() if m["name"] == "snoop"][0]
    assert info["denied"] == 2 and info["errors"] == 2 and info["state"] == "running"


def test_huge_data_and_unknown_topics(make_host, signer):
    h = make_host()
    h.install(signer.example("counter"))
    h.publish("nobody/listens/here", b"x")
    h.publish("sensor/big", b"\x00" * 60000)  # delivered: module copes
    h.pump()
    assert cbor.loads(topics(h, "count/total")[-1].data) == 1
    with pytest.raises(ValueError):
        h.publish("bad/+/topic", b"")
    assert h.modules["counter"].active.life.state == "running"


def test_alloc_refusal_drops_and_counts(make_host, signer):
    h = make_host()
    h.install(signer.fixture("alloc_zero.wasm", name="az"))
    feed(h, 3, topic="in/x")
    info = [m for m in h.module_list() if m["name"] == "az"][0]
    assert info["dropped"] == 3 and info["state"] == "running"


def test_restart_restores_active_version_and_state(make_host, signer, tmp_path):
    h = make_host()
    h.install(signer.example("counter"))
    feed(h, 4)
    h.install(signer.example("counter", "module_v2.toml"))
    feed(h, 1)
    h.flush()
    del h
    h2 = make_host()
    h2.restore()
    assert h2.modules["counter"].active.version == "2.0.0"
    assert h2.modules["counter"].previous == "1.0.0"
    feed(h2, 1)
    assert cbor.loads(topics(h2, "count/total")[-1].data) == 6


def test_remove_module(make_host, signer):
    h = make_host()
    h.install(signer.example("counter"))
    h.remove("counter")
    feed(h, 1)
    assert topics(h, "count/") == []
    with pytest.raises(InstallError):
        h.remove("counter")
    h2 = make_host()
    h2.restore()
    assert "counter" not in h2.modules
