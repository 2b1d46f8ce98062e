"""One differential run, the same code on both sides: CPython drives
pywasm3 (node/engine), the real MicroPython drives the wasm3 native module
(node/board/native_engine.py).  A job lists modules, how to drive each
(events through aegis_alloc/aegis_event, or export calls) and the fuel;
the result is everything observable: call results and trap messages, host
calls with their arguments, state, and the gas each metered call used.

    MICROPYPATH=<root>:<dir of wasm3.mpy> micropython tests/native_drive.py JOB.json
        prints the result as JSON
"""
import hashlib
import json
import sys

from node.core import cbor

SIGS = {"emit": "i(iiii)", "log": "v(iii)", "now_ms": "I()",
        "state_get": "i(iiii)", "state_set": "i(iiii)", "call": "i(iiiiii)"}


EMIT_MAX = 200      # then emit says AEGIS_ELIMIT, as a node's queue bound would


def _hex(b):
    return None if b is None else "".join("%02x" % x for x in b)


def _digest(b):
    """Length and hash: floods of big outputs stay cheap to compare."""
    return None if b is None else [len(b), _hex(hashlib.sha256(b).digest()[:8])]


class Host:
    """A dict-backed ABI v1 host for one instance (as tests/test_metering_wasm3.py)."""

    def __init__(self, engine, wasm, imports, fuel, gas_used):
        self.state, self.out = {}, []
        fns = {}
        for nm in imports:
            fns[nm] = (SIGS[nm], getattr(self, "h_" + nm))
        self.inst = engine.load(wasm, fns)
        self.mem_of = self.inst.memory
        self.budget = self.inst.budget_setter(fuel) if fuel else None
        self.gas_used = gas_used
        self.gas = []

    def mem(self, p, n):
        m = self.mem_of()
        return bytes(m[p:p + n]) if 0 <= p and 0 <= n and p + n <= len(m) else None

    def h_emit(self, tp, tl, dp, dl):
        if len(self.out) >= EMIT_MAX:
            return -6
        self.out.append(["emit", _digest(self.mem(tp, tl)), _digest(self.mem(dp, dl))])
        return 0

    def h_log(self, lv, p, n):
        if len(self.out) < EMIT_MAX:
            self.out.append(["log", lv, _digest(self.mem(p, n))])

    def h_now_ms(self):
        return 1700000000000

    def h_state_get(self, kp, kl, bp, cap):
        v = self.state.get(self.mem(kp, kl))
        if v is None:
            return -1
        if len(v) <= cap and self.mem(bp, cap) is not None:
            self.mem_of()[bp:bp + len(v)] = v
        return len(v)

    def h_state_set(self, kp, kl, vp, vl):
        k = self.mem(kp, kl)
        if vl < 0:
            self.state.pop(k, None)
        else:
            self.state[k] = self.mem(vp, vl)
        return 0

    def h_call(self, pp, pl, ip, il, op, cap):
        reply = cbor.dumps({"port": self.mem(pp, pl), "in": self.mem(ip, il)})
        if len(reply) <= cap and self.mem(op, cap) is not None:
            self.mem_of()[op:op + len(reply)] = reply
        return len(reply)

    def call(self, name, *args):
        f = self.inst.find(name)
        if f is None:
            return ["missing", name]
        if self.budget:
            self.budget()
        try:
            r = ["ok", f(*args)]
        except RuntimeError as e:
            r = ["trap", str(e)]
        if self.budget:
            self.gas.append(self.gas_used(self.inst))
        return r

    def deliver(self, topic, data):
        t = topic.encode()
        kind, p = self.call("aegis_alloc", len(t) + len(data))
        if kind != "ok" or p == 0:
            return [kind, p]
        m = self.mem_of()
        if p + len(t) + len(data) > len(m):
            return ["bad alloc", p]
        m[p:p + len(t) + len(data)] = t + data
        return self.call("aegis_event", p, len(t), p + len(t), len(data))


def run_one(engine, gas_used, job):
    with open(job["wasm"], "rb") as f:
        wasm = f.read()
    try:
        h = Host(engine, wasm, job["imports"], job["fuel"], gas_used)
    except Exception as e:
        return {"refused": str(e)}
    log = []
    for step in job["steps"]:
        if step[0] == "event":
            log.append(h.deliver(step[1], bytes.fromhex(step[2])))
        else:
            log.append(h.call(step[1], *step[2]))
    st = sorted([_hex(k), _hex(v)] for k, v in h.state.items())
    return {"log": log, "out": h.out, "state": st, "gas": h.gas}


def run(engine, gas_used, jobs):
    return [run_one(engine, gas_used, j) for j in jobs]


def main():
    # MICROPYTHONPATH holds the repo root and the wasm3.mpy directory.
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    from node.board.native_engine import NativeEngine
    eng = NativeEngine(stack=spec["stack"])
    res = run(eng, lambda inst: inst.gas_used(), spec["jobs"])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
