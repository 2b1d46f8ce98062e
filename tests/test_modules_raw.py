"""The example modules and wasm fixtures, run on raw pywasm3.

No node code is involved: a tiny in-test host implements ABI v1 (docs/ABI.md)
over dicts, so these tests pin down what the committed .wasm files do.
Rebuild them with `python3 modules/build.py`.
"""
import os
import struct
import tomllib

import cbor2
import pytest
import wasm3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODS = os.path.join(ROOT, "modules")
FIX = os.path.join(ROOT, "tests", "modules")

OK, ENOENT, EPERM, EINVAL, E2BIG, EIO, ELIMIT = 0, -1, -2, -3, -4, -5, -6

# ABI v1 imports: name -> (wasm params, wasm results, pywasm3 signature)
ABI = {
    "emit": (("i32",) * 4, ("i32",), "i(iiii)"),
    "log": (("i32",) * 3, (), "v(iii)"),
    "now_ms": ((), ("i64",), "I()"),
    "state_get": (("i32",) * 4, ("i32",), "i(iiii)"),
    "state_set": (("i32",) * 4, ("i32",), "i(iiii)"),
    "call": (("i32",) * 6, ("i32",), "i(iiiiii)"),
}


# ---------------------------------------------------------------- wasm parse
def _leb(b, i):
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def _name(b, i):
    n, i = _leb(b, i)
    return b[i:i + n].decode(), i + n


def _limits(b, i):
    flag, i = _leb(b, i)
    _, i = _leb(b, i)
    if flag & 1:
        _, i = _leb(b, i)
    return i


VT = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64"}


def parse(wasm):
    """(imports [(module, name, kind, type)], exports {name: (kind, type)})."""
    assert wasm[:8] == b"\0asm\1\0\0\0", "not a wasm v1 binary"
    i, types, funcs, imports, exports = 8, [], [], [], {}
    while i < len(wasm):
        sid = wasm[i]
        size, i = _leb(wasm, i + 1)
        end, j = i + size, i
        if sid == 1:
            n, j = _leb(wasm, j)
            for _ in range(n):
                assert wasm[j] == 0x60
                np_, j = _leb(wasm, j + 1)
                ps = tuple(VT[x] for x in wasm[j:j + np_])
                j += np_
                nr, j = _leb(wasm, j)
                rs = tuple(VT[x] for x in wasm[j:j + nr])
                j += nr
                types.append((ps, rs))
        elif sid == 2:
            n, j = _leb(wasm, j)
            for _ in range(n):
                mod, j = _name(wasm, j)
                nm, j = _name(wasm, j)
                kind = wasm[j]
                j += 1
                t = None
                if kind == 0:
                    ti, j = _leb(wasm, j)
                    t = types[ti]
                    funcs.append(t)
                elif kind == 1:
                    j = _limits(wasm, j + 1)
                elif kind == 2:
                    j = _limits(wasm, j)
                else:
                    j += 2
                imports.append((mod, nm, kind, t))
        elif sid == 3:
            n, j = _leb(wasm, j)
            for _ in range(n):
                ti, j = _leb(wasm, j)
                funcs.append(types[ti])
        elif sid == 7:
            n, j = _leb(wasm, j)
            for _ in range(n):
                nm, j = _name(wasm, j)
                kind = wasm[j]
                idx, j = _leb(wasm, j + 1)
                exports[nm] = (kind, funcs[idx] if kind == 0 else None)
        i = end
    return imports, exports


# ---------------------------------------------------------------- test host
def check_topic(t):
    if not 1 <= len(t) <= 255:
        return False
    s = t.decode()
    return not any(c in s for c in "+#\0") and all(s.split("/"))


class Host:
    """One module instance on pywasm3 with an ABI v1 host over dicts."""

    def __init__(self, path, state=None, emit=("",), ports=None,
                 clock=lambda: 1_700_000_000_000):
        with open(path, "rb") as f:
            self.wasm = f.read()
        self.imports, self.exports = parse(self.wasm)
        for mod, nm, kind, t in self.imports:
            if mod != "aegis" or nm not in ABI or kind != 0 \
                    or t != ABI[nm][:2]:
                raise ImportError("import %s.%s not in ABI v1" % (mod, nm))
        if self.exports.get("memory", (None,))[0] != 2:
            raise ImportError("module exports no memory")
        self.state = {} if state is None else state
        self.prefixes = emit
        self.ports = ports or {}
        self.clock = clock
        self.emitted, self.logs, self.calls = [], [], []
        env = wasm3.Environment()
        self.rt = env.new_runtime(64 * 1024)
        self.mod = env.parse_module(self.wasm)
        self.rt.load(self.mod)
        # pywasm3 ignores linking a name the module does not import, but
        # link only the imported ones anyway (as the node does).
        for _, nm, _, _ in self.imports:
            self.mod.link_function("aegis", nm, ABI[nm][2], getattr(self, nm))

    # -- host functions (never raise into wasm)
    def _mem(self):
        return self.rt.get_memory(0)

    def _get(self, p, n):
        m = self._mem()
        if p < 0 or n < 0 or p + n > len(m):
            return None
        return bytes(m[p:p + n])

    def emit(self, tp, tl, dp, dl):
        topic, data = self._get(tp, tl), self._get(dp, dl)
        if topic is None or data is None or not check_topic(topic):
            return EINVAL
        if dl > 65536:
            return E2BIG
        if not any(topic.decode().startswith(p) for p in self.prefixes):
            return EPERM
        self.emitted.append((topic.decode(), data))
        return OK

    def log(self, level, p, n):
        self.logs.append((level, self._get(p, min(n, 1024)).decode()))

    def now_ms(self):
        return self.clock()

    def state_get(self, kp, kl, bp, cap):
        key = self._get(kp, kl)
        if key is None or not 1 <= kl <= 128 or self._get(bp, cap) is None:
            return EINVAL
        v = self.state.get(key)
        if v is None:
            return ENOENT
        if len(v) <= cap:
            self._mem()[bp:bp + len(v)] = v
        return len(v)

    def state_set(self, kp, kl, vp, vl):
        key = self._get(kp, kl)
        if key is None or not 1 <= kl <= 128:
            return EINVAL
        if vl < 0:
            self.state.pop(key, None)
            return OK
        val = self._get(vp, vl)
        if val is None:
            return EINVAL
        if vl > 16384:
            return E2BIG
        self.state[key] = val
        return OK

    def call(self, pp, pl, ip, il, op, cap):
        port, data = self._get(pp, pl), self._get(ip, il)
        if port is None or data is None or self._get(op, cap) is None:
            return EINVAL
        port = port.decode()
        self.calls.append((port, data))
        if port not in self.ports:
            return EPERM
        out = self.ports[port]
        if out is None:
            return ENOENT
        if isinstance(out, int):
            return out
        if len(out) <= cap:
            self._mem()[op:op + len(out)] = out
        return len(out)

    # -- driving the module
    def has(self, name):
        return name in self.exports

    def start(self):
        return self.rt.find_function("aegis_start")() if self.has(
            "aegis_start") else 0

    def stop(self):
        if self.has("aegis_stop"):
            self.rt.find_function("aegis_stop")()

    def deliver(self, topic, data):
        """Deliver one event; None when aegis_alloc refused it (dropped)."""
        t = topic.encode()
        p = self.rt.find_function("aegis_alloc")(len(t) + len(data))
        if p == 0:
            return None
        m = self._mem()
        assert 0 < p and p + len(t) + len(data) <= len(m)
        m[p:p + len(t)] = t
        m[p + len(t):p + len(t) + len(data)] = data
        return self.rt.find_function("aegis_event")(p, len(t), p + len(t),
                                                    len(data))

    def take(self):
        out, self.emitted = self.emitted, []
        return out


def mod(name, wasm=None):
    return os.path.join(MODS, name, (wasm or name) + ".wasm")


def fx(name):
    return os.path.join(FIX, name + ".wasm")


def num(x):
    return cbor2.dumps(x, canonical=True)


f16 = lambda x: b"\xf9" + struct.pack(">e", x)  # noqa: E731
f32 = lambda x: b"\xfa" + struct.pack(">f", x)  # noqa: E731
f64 = lambda x: b"\xfb" + struct.pack(">d", x)  # noqa: E731


# ---------------------------------------------------------------- manifests
EXAMPLES = {
    "threshold": ["module.toml"],
    "counter": ["module.toml", "module_v2.toml"],
    "movavg": ["module.toml"],
    "facts": ["module.toml"],
}


@pytest.mark.parametrize("name,toml", [(n, t) for n, ts in EXAMPLES.items()
                                       for t in ts])
def test_manifest_and_abi_shape(name, toml):
    with open(os.path.join(MODS, name, toml), "rb") as f:
        meta = tomllib.load(f)
    assert meta["name"] == name
    parts = meta["version"].split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
    for key in ("subscribe", "emit", "ports"):
        assert isinstance(meta[key], list)
    assert meta["description"]
    h = Host(os.path.join(MODS, name, meta["wasm"]))  # imports are ABI v1
    assert h.exports["aegis_alloc"] == (0, (("i32",), ("i32",)))
    assert h.exports["aegis_event"] == (0, (("i32",) * 4, ("i32",)))
    if h.has("aegis_start"):
        assert h.exports["aegis_start"] == (0, ((), ("i32",)))
    used = {nm for _, nm, _, _ in h.imports}
    assert ("call" in used) == bool(meta["ports"])


# ---------------------------------------------------------------- threshold
def test_threshold_alarm_and_clear_default():
    h = Host(mod("threshold"), emit=("alarm/",))
    assert h.deliver("sensor/s1/temp", num(25)) == OK
    assert h.deliver("sensor/s1/temp", num(30.0)) == OK  # not above
    assert h.take() == []
    assert h.deliver("sensor/s1/temp", f64(31.25)) == OK
    [(t, d)] = h.take()
    assert t == "alarm/s1"
    assert cbor2.loads(d) == {"value": 31.25, "threshold": 30.0}
    assert h.state[b"armed/s1"] == b"\x01"
    assert h.deliver("sensor/s1/temp", f32(35.5)) == OK  # still above
    assert h.take() == []
    assert h.deliver("sensor/s1/temp", f16(29.5)) == OK
    [(t, d)] = h.take()
    assert t == "alarm/s1/clear"
    assert cbor2.loads(d) == {"value": 29.5, "threshold": 30.0}
    assert b"armed/s1" not in h.state
    assert b"threshold" not in h.state  # default not written


def test_threshold_sensors_are_independent():
    h = Host(mod("threshold"), emit=("alarm/",))
    h.deliver("sensor/a/temp", num(40))
    h.deliver("sensor/b/temp", num(10))
    h.deliver("sensor/b/temp", num(41))
    h.deliver("sensor/a/temp", num(-5))
    assert [t for t, _ in h.take()] == ["alarm/a", "alarm/b", "alarm/a/clear"]


def test_threshold_update_persists_in_state():
    state = {}
    h = Host(mod("threshold"), state=state, emit=("alarm/",))
    assert h.deliver("config/threshold", num(20)) == OK
    assert state[b"threshold"] == struct.pack("<d", 20.0)
    assert h.deliver("sensor/x/temp", num(21)) == OK
    [(t, d)] = h.take()
    assert (t, cbor2.loads(d)) == ("alarm/x", {"value": 21.0,
                                               "threshold": 20.0})
    # A new instance (restart / new version) over the same state.
    h2 = Host(mod("threshold"), state=state, emit=("alarm/",))
    assert h2.deliver("sensor/x/temp", num(22)) == OK  # still armed
    assert h2.take() == []
    assert h2.deliver("config/threshold", f16(-2.5)) == OK
    assert h2.deliver("sensor/x/temp", num(-3)) == OK
    [(t, d)] = h2.take()
    assert (t, cbor2.loads(d)) == ("alarm/x/clear", {"value": -3.0,
                                                     "threshold": -2.5})


def test_threshold_refuses_bad_input():
    h = Host(mod("threshold"), emit=("alarm/",))
    for topic, data in [("sensor/s/temp", num("hot")),
                        ("sensor/s/temp", b""),
                        ("sensor/s/temp", num(31) + b"\x00"),  # trailing
                        ("sensor/s/temp", b"\xf5"),  # true
                        ("sensor/s/temp", b"\x19\x01"),  # truncated
                        ("config/threshold", num([1])),
                        ("config/threshold", f64(float("nan"))),
                        ("sensor/a/b/temp", num(99)),
                        ("other/topic", num(99))]:
        assert h.deliver(topic, data) == EINVAL, (topic, data)
    assert h.take() == [] and h.state == {}


def test_threshold_long_sensor_id_and_emit_errors():
    sid = "s" * 200
    h = Host(mod("threshold"), emit=("alarm/",))
    assert h.deliver("sensor/%s/temp" % sid, num(50)) == OK
    [(t, _)] = h.take()
    assert t == "alarm/" + sid
    [key] = h.state
    assert key.startswith(b"armed#") and len(key) <= 128
    # Emit refused: the handler reports it and stays unarmed (retries).
    h2 = Host(mod("threshold"), emit=("nothing/",))
    assert h2.deliver("sensor/z/temp", num(50)) == EPERM
    assert h2.state == {}


# ---------------------------------------------------------------- counter
def counts(h):
    return [(t, cbor2.loads(d)) for t, d in h.take()]


def test_counter_counts_and_persists():
    state = {}
    h = Host(mod("counter"), state=state, emit=("count/",))
    assert h.start() == 0
    for i in range(30):
        assert h.deliver("sensor/s%d/temp" % (i % 3), num(20 + i)) == OK
    assert counts(h) == [("count/total", n) for n in range(1, 31)]
    assert state == {b"count": struct.pack("<Q", 30)}


def test_counter_v2_continues_after_hot_swap():
    state = {}
    fed = 0
    v1 = Host(mod("counter"), state=state, emit=("count/",))
    assert v1.start() == 0
    for _ in range(17):
        v1.deliver("sensor/a/temp", num(1))
        fed += 1
    v1.stop()
    v2 = Host(mod("counter", "counter_v2"), state=state, emit=("count/",))
    assert v2.start() == 0
    assert v2.logs == [(1, "counter v2 started")]
    for _ in range(5):
        v2.deliver("sensor/b/humidity", num(2))
        fed += 1
    out = counts(v1) + counts(v2)
    assert [n for _, n in out] == list(range(1, fed + 1))
    assert out[-1] == ("count/total", fed)
    assert state[b"count"] == struct.pack("<Q", fed)


@pytest.mark.parametrize("start", [0, 22, 23, 254, 255, 65534, 65535,
                                   2**32 - 2, 2**32 - 1, 2**64 - 2])
def test_counter_cbor_uint_widths(start):
    for wasm in ("counter", "counter_v2"):
        h = Host(mod("counter", wasm), state={b"count": struct.pack("<Q", start)},
                 emit=("count/",))
        assert h.deliver("sensor/x", b"") == OK
        [(t, d)] = h.take()
        assert d == cbor2.dumps(start + 1, canonical=True)


def test_counter_rejects_corrupt_state():
    h = Host(mod("counter"), state={b"count": b"\x01\x02"}, emit=("count/",))
    assert h.deliver("sensor/x", b"") == EINVAL
    assert h.take() == []


# ---------------------------------------------------------------- movavg
def test_movavg_window_of_8():
    h = Host(mod("movavg"), emit=("avg/",))
    vals = [10, 12.5, 11, -4, 20, 7.25, 9, 13, 100, 0.5, 3]
    encs = [num, f16, f32, f64]
    for i, v in enumerate(vals):
        assert h.deliver("sensor/k1/temp", encs[i % 4](v)) == OK
        [(t, d)] = h.take()
        win = vals[max(0, i - 7):i + 1]
        assert t == "avg/k1"
        assert d[0] == 0xFB  # always a CBOR double
        assert cbor2.loads(d) == pytest.approx(sum(win) / len(win))


def test_movavg_sensors_independent_and_eviction():
    h = Host(mod("movavg"), emit=("avg/",))
    h.deliver("sensor/a/temp", num(10))
    h.deliver("sensor/b/temp", num(30))
    h.deliver("sensor/a/temp", num(20))
    assert [(t, cbor2.loads(d)) for t, d in h.take()] == [
        ("avg/a", 10.0), ("avg/b", 30.0), ("avg/a", 15.0)]
    # 20 more sensors: the table (16) evicts the least recently updated.
    for i in range(20):
        assert h.deliver("sensor/n%d/temp" % i, num(i)) == OK
    assert [cbor2.loads(d) for _, d in h.take()] == [float(i) for i in range(20)]
    h.deliver("sensor/n19/temp", num(21))  # still in the table
    h.deliver("sensor/a/temp", num(50))  # was evicted: starts over
    assert [cbor2.loads(d) for _, d in h.take()] == [20.0, 50.0]


def test_movavg_refuses_bad_input():
    h = Host(mod("movavg"), emit=("avg/",))
    assert h.deliver("sensor/%s/temp" % ("i" * 65), num(1)) == EINVAL
    assert h.deliver("sensor/ok/temp", num(None)) == EINVAL
    assert h.deliver("sensor/a/b/temp", num(1)) == EINVAL
    assert h.take() == []
    assert h.deliver("sensor/%s/temp" % ("i" * 64), num(1)) == OK


# ---------------------------------------------------------------- facts
def test_facts_replies_with_port_output():
    facts = cbor2.dumps({"node": "n1", "arch": "x86_64"}, canonical=True)
    h = Host(mod("facts"), emit=("facts/reply",), ports={"facts": facts})
    assert h.deliver("facts/request", b"\xa0") == OK
    assert h.take() == [("facts/reply", facts)]
    assert h.calls == [("facts", b"\xa0")]


@pytest.mark.parametrize("port,err", [(None, ENOENT), (EIO, EIO),
                                      (b"x" * 9000, E2BIG)])
def test_facts_port_errors(port, err):
    h = Host(mod("facts"), emit=("facts/reply",), ports={"facts": port})
    assert h.deliver("facts/request", b"") == err
    assert h.take() == []
    assert h.logs and h.logs[0][0] == 2


def test_facts_port_not_granted():
    h = Host(mod("facts"), emit=("facts/reply",), ports={})
    assert h.deliver("facts/request", b"") == EPERM


# ---------------------------------------------------------------- fixtures
def test_trap_always():
    h = Host(fx("trap_always"))
    for _ in range(3):
        with pytest.raises(RuntimeError, match=r"\[trap\]"):
            h.deliver("sensor/a/temp", num(1))


def test_start_fails():
    h = Host(fx("start_fails"))
    assert h.start() == 1
    assert h.deliver("a/b", b"x") == OK


@pytest.mark.parametrize("name,imp", [
    ("forbidden_import", ("env", "system")),
    ("forbidden_import_aegis", ("aegis", "exec")),
    ("bad_signature", ("aegis", "emit"))])
def test_forbidden_imports(name, imp):
    with open(fx(name), "rb") as f:
        imports, _ = parse(f.read())
    assert [(m, n) for m, n, _, _ in imports] == [imp]
    with pytest.raises(ImportError):
        Host(fx(name))


def test_bad_signature_link_refused_by_pywasm3():
    env = wasm3.Environment()
    rt = env.new_runtime(64 * 1024)
    with open(fx("bad_signature"), "rb") as f:
        m = env.parse_module(f.read())
    rt.load(m)
    with pytest.raises(RuntimeError, match="signature"):
        m.link_function("aegis", "emit", "i(iiii)", lambda *a: 0)


def test_no_memory():
    with open(fx("no_memory"), "rb") as f:
        imports, exports = parse(f.read())
    assert "memory" not in exports and "aegis_event" in exports
    with pytest.raises(ImportError):
        Host(fx("no_memory"))


def test_emit_outside():
    h = Host(fx("emit_outside"), emit=("echo/",))
    assert h.deliver("a/b", b"") == EPERM
    assert h.take() == []
    h2 = Host(fx("emit_outside"), emit=("secret/",))
    assert h2.deliver("a/b", b"") == OK
    assert h2.take() == [("secret/x", b"")]


def test_echo():
    h = Host(fx("echo"), emit=("echo/",))
    for topic, data in [("a", b""), ("sensor/1/temp", num(21.5)),
                        ("x/y", bytes(range(256)) * 256)]:
        assert h.deliver(topic, data) == OK
        assert h.take() == [("echo/" + topic, data)]
    assert h.deliver("t" * 251, b"") == EINVAL  # echo topic > 255 bytes
    assert h.deliver("a", b"x" * 65537) == E2BIG  # host data limit
    # Over the 255 + 65536 byte event buffer: aegis_alloc returns 0.
    assert h.deliver("a", b"x" * 65791) is None
    assert [nm for _, nm, _, _ in h.imports] == ["emit"]


def test_stateful():
    state = {}
    h = Host(fx("stateful"), state=state, emit=("state/",))
    for i in range(1, 4):
        assert h.deliver("a", b"") == OK
        assert h.take() == [("state/n", struct.pack("<Q", i))]
    assert state == {b"n": struct.pack("<Q", 3)}
    h2 = Host(fx("stateful"), state=state, emit=("state/",))
    assert h2.deliver("a", b"") == OK
    assert h2.take() == [("state/n", struct.pack("<Q", 4))]


def test_alloc_zero_drops_events():
    h = Host(fx("alloc_zero"))
    assert h.deliver("a/b", b"data") is None


def test_handler_error_is_not_a_trap():
    h = Host(fx("handler_error"))
    assert h.deliver("a/b", b"") == EINVAL


def test_invalid_wasm():
    with open(fx("invalid"), "rb") as f:
        junk = f.read()
    assert junk[:4] != b"\0asm"
    with pytest.raises(RuntimeError):
        wasm3.Environment().parse_module(junk)
