"""zigstats (modules/zigstats, written in Zig from docs/ABI.md alone) on a
real node: running per-sensor statistics over every CBOR number form, state
that survives a restart, and malformed data that is refused, not fatal."""
import math
import os
import struct

import pytest

from node.core import cbor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "modules", "zigstats", "zigstats.wasm")
KEYS = ["n", "max", "min", "mean"]          # deterministic CBOR key order


def half(x):
    return b"\xf9" + struct.pack(">e", x)


def single(x):
    return b"\xfa" + struct.pack(">f", x)


def double(x):
    return b"\xfb" + struct.pack(">d", x)


def install(make_host, signer):
    h = make_host()
    with open(WASM, "rb") as f:
        wasm = f.read()
    h.install(signer.pack("zigstats", "1.0.0", wasm, ["sensor/+/temp"],
                          ["stats/"], []))
    return h


def stats_events(h):
    return [e for e in h.seen if e.topic.startswith("stats/")]


class Model:
    """What the module should report (same incremental mean update)."""

    def __init__(self):
        self.s = {}

    def add(self, sid, x):
        n, mn, mx, mean = self.s.get(sid, (0, x, x, 0.0))
        n += 1
        mean += (x - mean) / n
        self.s[sid] = (n, min(mn, x), max(mx, x), mean)
        return self.s[sid]


def send(h, model, sid, raw, value):
    """Publish one reading and check the single stats event it causes."""
    before = len(stats_events(h))
    h.publish("sensor/%s/temp" % sid, raw)
    h.pump()
    evs = stats_events(h)[before:]
    assert len(evs) == 1, evs
    ev = evs[0]
    assert ev.topic == "stats/" + sid
    # exact bytes: map(4) with keys in canonical order, doubles as 0xfb
    assert ev.data[0] == 0xa4
    got = cbor.loads(ev.data)
    assert list(got) == KEYS
    n, mn, mx, mean = model.add(sid, value)
    assert got["n"] == n and isinstance(got["n"], int)
    assert got["min"] == mn and got["max"] == mx
    assert got["mean"] == pytest.approx(mean, rel=1e-12, abs=1e-12)
    for k in ("min", "max", "mean"):
        assert isinstance(got[k], float)
    tail = ev.data[-9:]
    assert tail[0] == 0xfb          # mean is the last value: a CBOR double
    return got


READINGS = [
    # (sensor, data bytes, value)
    ("k1", cbor.dumps(21.5), 21.5),
    ("k1", cbor.dumps(20), 20.0),                         # uint, 1-byte
    ("k1", b"\xf9\x3c\x00", 1.0),                         # half 1.0
    ("k2", cbor.dumps(-5), -5.0),                         # negint, immediate
    ("k1", half(-2.5), -2.5),                             # negative half
    ("k2", b"\x38\x63", -100.0),                          # negint, 1-byte arg
    ("k2", single(3.25), 3.25),                           # single float
    ("k3", double(-0.125), -0.125),                       # double float
    ("k1", b"\x19\x01\x00", 256.0),                       # uint, 2-byte arg
    ("k2", b"\x1a\x00\x01\x00\x00", 65536.0),             # uint, 4-byte arg
    ("k3", b"\x1b" + struct.pack(">Q", 2**40), 2.0**40),  # uint, 8-byte arg
    ("k3", b"\x39\x01\x00", -257.0),                      # negint, 2-byte arg
    ("k1", half(6.103515625e-05), 6.103515625e-05),       # smallest normal half
    ("k1", b"\xf9\x00\x01", 5.960464477539063e-08),       # subnormal half
    ("k3", b"\xf9\x4d\x60", 21.5),                        # the ABI.md example
    ("k2", cbor.dumps(0), 0.0),
]


def test_stats_all_number_forms(make_host, signer):
    h = install(make_host, signer)
    model = Model()
    for sid, raw, value in READINGS:
        send(h, model, sid, raw, value)
    assert {e.topic for e in stats_events(h)} == {"stats/k1", "stats/k2",
                                                  "stats/k3"}
    last = cbor.loads(stats_events(h)[-1].data)
    assert last == {"n": 5, "min": -100.0, "max": 65536.0,
                    "mean": pytest.approx((-5 - 100 + 3.25 + 65536 + 0) / 5)}
    k1 = [cbor.loads(e.data) for e in stats_events(h)
          if e.topic == "stats/k1"][-1]
    vals = [v for s, _, v in READINGS if s == "k1"]
    assert k1["n"] == len(vals) and k1["min"] == min(vals) \
        and k1["max"] == max(vals)
    assert k1["mean"] == pytest.approx(sum(vals) / len(vals), rel=1e-12)


def test_exact_encoding(make_host, signer):
    h = install(make_host, signer)
    h.publish("sensor/a/temp", cbor.dumps(2))
    h.pump()
    (ev,) = stats_events(h)
    assert ev.data == (b"\xa4" + b"\x61n" + b"\x01"
                       + b"\x63max" + double(2.0)
                       + b"\x63min" + double(2.0)
                       + b"\x64mean" + double(2.0))


def test_state_survives_restart(make_host, signer):
    h = install(make_host, signer)
    model = Model()
    for sid, raw, value in READINGS[:8]:
        send(h, model, sid, raw, value)
    h.flush()

    h2 = make_host()
    h2.restore()
    for sid, raw, value in READINGS[8:]:
        got = send(h2, model, sid, raw, value)
    assert got["n"] == 5                      # k2: 3 before, 2 after restart
    k1 = [cbor.loads(e.data) for e in stats_events(h2)
          if e.topic == "stats/k1"]
    assert [s["n"] for s in k1] == [5, 6, 7]   # 4 readings before
    assert k1[-1]["min"] == -2.5 and k1[-1]["max"] == 256.0


def test_long_sensor_ids(make_host, signer):
    """Ids longer than a state key (128 bytes) are hashed into the key."""
    h = install(make_host, signer)
    model = Model()
    a = "x" * 200 + "a"
    b = "x" * 200 + "b"            # same first 128 bytes as a
    short = "x" * 128              # exactly a full key
    for sid, v in ((a, 1), (b, 10), (a, 3), (short, 7), (b, 20), (a, 5)):
        send(h, model, sid, cbor.dumps(v), float(v))
    got = {e.topic[6:]: cbor.loads(e.data) for e in stats_events(h)}
    assert got[a] == {"n": 3, "min": 1.0, "max": 5.0, "mean": 3.0}
    assert got[b] == {"n": 2, "min": 10.0, "max": 20.0, "mean": 15.0}
    assert got[short]["n"] == 1


MALFORMED = [
    b"",                           # no item
    b"\xff",                       # break outside an indefinite item
    b"\x18",                       # truncated 1-byte argument
    b"\x19\x01",                   # truncated 2-byte argument
    b"\xf9\x3c",                   # truncated half
    b"\xfb\x00\x00",               # truncated double
    b"\x01\x02",                   # trailing bytes after the number
    b"\x1c",                       # reserved additional info
    b"\x1f",                       # indefinite uint (invalid)
    b"\x61a",                      # text string
    b"\xa1\x61n\x01",              # a map
    b"\xf5",                       # true
    b"\xf6",                       # null
    b"\xf9\x7e\x00",               # NaN
    b"\xc1\x01",                   # tagged number
    b"not cbor at all",
    bytes(range(256)) * 4,
]


def test_malformed_data_is_refused_not_fatal(make_host, signer):
    h = install(make_host, signer)
    model = Model()
    send(h, model, "m", cbor.dumps(10), 10.0)
    for raw in MALFORMED:
        h.publish("sensor/m/temp", raw)   # must not raise or crash the node
        h.pump()
    # refused: no stats for any of them
    assert len(stats_events(h)) == 1
    # and the module is still alive, with its state untouched
    got = send(h, model, "m", cbor.dumps(-4), -4.0)
    assert got == {"n": 2, "min": -4.0, "max": 10.0, "mean": 3.0}
    got = send(h, model, "other", half(math.inf), math.inf)
    assert got["n"] == 1 and got["max"] == math.inf


def test_only_subscribed_topics(make_host, signer):
    h = install(make_host, signer)
    for topic in ("sensor/k1/hum", "sensor/k1/temp/x", "sensor/temp",
                  "stats/k1", "other/k1/temp"):
        h.publish(topic, cbor.dumps(1))
    h.pump()
    assert [e.topic for e in stats_events(h)] == ["stats/k1"]  # our publish
    # nothing came from the module (e.mod is "<name>@<version>" for module
    # events)
    assert not [e for e in h.seen if str(e.mod).startswith("zigstats")]
    h.publish("sensor/k1/temp", cbor.dumps(1))
    h.pump()
    assert [e.mod for e in h.seen if str(e.mod).startswith("zigstats")] \
        == ["zigstats@1.0.0"]
