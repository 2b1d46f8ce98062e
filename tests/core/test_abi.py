from node.core import abi as A
from node.core.statelog import StateLog
from node.core.memstore import MemStore


class FakeSlot:
    label = "m@1.0.0"


def make(caps=None, ports=None):
    mem = bytearray(4096)
    out = []
    logs = []
    a = A.HostABI("m", caps or A.Caps(["out/"], ["facts"]), StateLog(MemStore(), "m"),
                  lambda: mem, lambda: 1234,
                  lambda abi, t, d: out.append((t, d)) or 0,
                  lambda abi, lv, txt: logs.append((lv, txt)),
                  lambda abi, port, data: (ports or {}).get(port, A.ENOENT))
    a.slot = FakeSlot()
    return a, mem, out, logs


def put(mem, at, b):
    mem[at:at + len(b)] = b
    return at, len(b)


def test_emit_checks_prefix_and_bounds():
    a, mem, out, _ = make()
    tp, tl = put(mem, 0, b"out/x")
    dp, dl = put(mem, 100, b"\x01\x02")
    assert a.emit(tp, tl, dp, dl) == A.OK
    assert out == [("out/x", b"\x01\x02")]
    tp, tl = put(mem, 0, b"secret/x")
    assert a.emit(tp, tl, dp, dl) == A.EPERM and a.denied == 1
    tp, tl = put(mem, 0, b"out/+")
    assert a.emit(tp, tl, dp, dl) == A.EINVAL
    assert a.emit(4090, 10, dp, dl) == A.EINVAL
    assert a.emit(-1, 3, dp, dl) == A.EINVAL
    assert a.emit(0, 0, dp, dl) == A.EINVAL
    tp, tl = put(mem, 0, b"out/\xff")
    assert a.emit(tp, tl, dp, dl) == A.EINVAL
    a.data_max = 1
    tp, tl = put(mem, 0, b"out/x")
    assert a.emit(tp, tl, dp, dl) == A.E2BIG


def test_state_get_set_semantics():
    a, mem, _, _ = make()
    kp, kl = put(mem, 0, b"key")
    assert a.state_get(kp, kl, 200, 10) == A.ENOENT
    vp, vl = put(mem, 100, b"hello")
    assert a.state_set(kp, kl, vp, vl) == A.OK
    assert a.state_get(kp, kl, 200, 2) == 5 and mem[200:202] == b"\x00\x00"
    assert a.state_get(kp, kl, 200, 5) == 5 and mem[200:205] == b"hello"
    assert a.state_get(kp, kl, 4095, 5) == A.EINVAL
    assert a.state_set(kp, kl, vp, -1) == A.OK
    assert a.state_get(kp, kl, 200, 5) == A.ENOENT
    assert a.state_set(kp, 0, vp, vl) == A.EINVAL
    assert a.state_set(kp, kl, 0, 20000) == A.EINVAL


def test_call_needs_grant_and_binding():
    a, mem, _, _ = make(ports={"facts": b"\xa0"})
    pp, pl = put(mem, 0, b"facts")
    assert a.call(pp, pl, 0, 0, 300, 10) == 1 and mem[300] == 0xA0
    pp, pl = put(mem, 0, b"gpio")
    assert a.call(pp, pl, 0, 0, 300, 10) == A.EPERM
    a2, mem2, _, _ = make(ports={})
    pp, pl = put(mem2, 0, b"facts")
    assert a2.call(pp, pl, 0, 0, 300, 10) == A.ENOENT


def test_policy_narrows_caps():
    c = A.Caps(["out/", "alarm/"], ["facts", "http"]).narrowed(["alarm/"], ["facts"])
    assert c.emit == ("alarm/",) and c.ports == frozenset(["facts"])
    c = A.Caps(["out/"], ["facts"]).narrowed(None, None)
    assert c.emit == ("out/",)


def test_log_and_clock():
    a, mem, _, logs = make()
    p, n = put(mem, 0, b"hi")
    a.log(1, p, n)
    a.log(1, 4095, 10)
    assert logs == [(1, "hi")]
    assert a.now_ms() == 1234
