"""Shared helpers for bench/run.py sections.

A section is a function `fn(ctx) -> [result dict]`; build each dict with
`result(...)`.  `ctx` is a `Context`: rounds, quick flag, a scratch dir, a
signing key and a log function.
"""
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# --------------------------------------------------------------------------
# Embedded wasm (generated once with wat2wasm, so bench time needs no wabt).
#
# CEIL_WAT -> CEIL_WASM: the smallest Python->wasm->Python round trip.
CEIL_WAT = """
(module
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (call $emit (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))))
"""
CEIL_WASM = bytes.fromhex(
    "0061736d01000000010d0260047f7f7f7f017f6000017f020e0105616567697304656d6974"
    "0000030201010503010001071002066d656d6f727902000372756e00010a0e010c004100"
    "41004100410010000b")

# Fallback copy of tests/modules/echo.wasm (wat2wasm of tests/modules/echo.wat:
# emits "echo/" + topic with the same data).  The committed file wins.
ECHO_WASM_FALLBACK = bytes.fromhex(
    "0061736d01000000010e0260047f7f7f7f017f60017f017f020e0105616567697304656d"
    "6974000003030201000503010002072603066d656d6f727902000b61656769735f616c6c"
    "6f6300010b61656769735f6576656e7400020a27021200200041ff81044b047f41000541"
    "80080b0b1200200041056b200141056a2002200310000b0b0c010041fb070b056563686f"
    "2f")


def echo_wasm():
    """(wasm bytes, where they came from)."""
    p = os.path.join(ROOT, "tests", "modules", "echo.wasm")
    try:
        with open(p, "rb") as f:
            return f.read(), "tests/modules/echo.wasm"
    except OSError:
        return ECHO_WASM_FALLBACK, "embedded copy of tests/modules/echo.wasm"


def _leb(n):
    from node.core.wasmcode import uleb     # the metering pass's LEB128 encoder
    return uleb(n)


def wait_until(cond, timeout, what, poll=0.02):
    """cond()'s first truthy value, polled until `timeout` seconds pass;
    RuntimeError then (a bench section fails, it does not assert)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise RuntimeError("timed out waiting for " + what)


def board_status(sub, node, fleet="test"):
    """The last retained status a broker.Subscriber saw for `node`, or {}."""
    import cbor2
    topic = "aegis/%s/node/%s/status" % (fleet, node)
    st = [cbor2.loads(p) for t, p in list(sub.msgs) if t == topic]
    return st[-1] if st else {}


def pad_wasm(wasm, total, tag=b""):
    """Append a custom section (id 0, name "pad") so the module is exactly
    `total` bytes.  `tag` goes first in the payload (e.g. the version, so
    each padded version has its own hash)."""
    wasm = bytes(wasm)
    name = b"pad"
    head = _leb(len(name)) + name + tag
    for slen in range(1, 6):  # bytes used by the section-size LEB
        size = total - len(wasm) - 1 - slen
        if size >= len(head) and len(_leb(size)) == slen:
            body = head + b"\0" * (size - len(head))
            out = wasm + b"\x00" + _leb(size) + body
            assert len(out) == total
            return out
    raise ValueError("cannot pad %d bytes to %d" % (len(wasm), total))


# --------------------------------------------------------------------------
# Statistics and timing

def median(xs):
    return statistics.median(xs)


def pctl(xs, p):
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def settle():
    """Collect garbage between rounds so one round's garbage does not bill
    the next (gc stays enabled while measuring, as on a real node)."""
    gc.collect()


now = time.perf_counter


# --------------------------------------------------------------------------
# Results

def target(op, limit, on="value"):
    """A pass criterion: `on` ("value" or "ratio") `op` ("<", "<=", ">=", ">")
    `limit`."""
    return {"on": on, "op": op, "limit": limit}


_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}


def result(section, metric, value, unit, baseline=None, baseline_name=None,
           tgt=None, samples=None, note="", **extra):
    """One row.  `ratio` = value / baseline (both in `unit`)."""
    ratio = (value / baseline) if baseline else None
    r = {"section": section, "metric": metric, "value": value, "unit": unit,
         "baseline": baseline, "baseline_name": baseline_name, "ratio": ratio,
         "target": tgt, "pass": None, "note": note}
    if tgt is not None:
        x = ratio if tgt["on"] == "ratio" else value
        r["pass"] = None if x is None else bool(_OPS[tgt["op"]](x, tgt["limit"]))
    if samples is not None:
        r["samples"] = samples
    r.update(extra)
    return r


def fmt_num(x):
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    ax = abs(x)
    if ax >= 1e6:
        return "%.3gM" % (x / 1e6)
    if ax >= 1e4:
        return "%.1fk" % (x / 1e3)
    if ax >= 100:
        return "%.0f" % x
    if ax >= 1:
        return "%.2f" % x
    return "%.3f" % x


def fmt_target(t, unit):
    if not t:
        return "-"
    if t["on"] == "ratio":
        return "ratio %s %g" % (t["op"], t["limit"])
    return "%s %g %s" % (t["op"], t["limit"], unit)


def table(rows):
    cols = ["section", "metric", "value", "unit", "baseline", "ratio", "target", "pass/fail"]
    lines = []
    for r in rows:
        p = r.get("pass")
        lines.append([r["section"], r["metric"], fmt_num(r["value"]), r["unit"],
                      fmt_num(r["baseline"]), fmt_num(r["ratio"]),
                      fmt_target(r.get("target"), r["unit"]),
                      "-" if p is None else ("PASS" if p else "FAIL")])
    w = [max(len(c), *(len(l[i]) for l in lines)) if lines else len(c)
         for i, c in enumerate(cols)]
    num = {2, 4, 5}
    def row(vals):
        return "  ".join(v.rjust(w[i]) if i in num else v.ljust(w[i])
                         for i, v in enumerate(vals)).rstrip()
    out = [row(cols), row(["-" * x for x in w])]
    out += [row(l) for l in lines]
    return "\n".join(out)


def machine_info():
    info = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        info["pywasm3"] = version("pywasm3")
        info["cbor2"] = version("cbor2")
    except Exception:
        pass
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                     capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        pass
    return info


def fs_type(path):
    """File system type of `path` (tmpfs makes fsync free: note it)."""
    try:
        return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except Exception:
        return None


def write_json_atomic(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------
# Context handed to sections

class Context:
    def __init__(self, rounds, quick, tmpdir, log):
        self.rounds = rounds
        self.quick = quick
        self.tmpdir = tmpdir
        self.log = log
        self._keys = None

    def keys(self):
        """(sign, raw_pub, verifiers) of a throw-away signing key."""
        if self._keys is None:
            from node import keys
            prefix = os.path.join(self.tmpdir, "bench-key")
            keys.keygen(prefix)
            sign, raw = keys.signer(keys.load_private(prefix + ".key"))
            self._keys = (sign, raw, keys.load_verifiers([prefix + ".pub"]))
        return self._keys

    def package(self, name, version, wasm, **manifest):
        from node.core import package as pk
        sign, raw, _ = self.keys()
        m = pk.make_manifest(name, version, wasm, **manifest)
        return pk.build(m, wasm, sign, raw)

    def mkdtemp(self, what):
        return tempfile.mkdtemp(prefix=what + "-", dir=self.tmpdir)
