"""Native mode end to end (issue 7): `aegis flash` puts lib/wasm3.mpy on
a simulated board (the real MicroPython Unix port behind a pty, a Pico W
sized heap), a pushed metered module runs in wasm3 on the board itself (no
gateway, no proxy host anywhere), its events leave the board under the
board's id, its state survives, and the status says "native"."""
import os
import subprocess
import sys
import time

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import ROOT, Signer
from gateway_proc import wait_for
from host_sim.boards import UnixBoard
from node.core import envelope as E


# A Pico W's heap: the runtime's bytecode runs from its ROMFS image, which
# leaves room for wasm3 and a small module (docs/NATIVE.md, heap budget).
HEAP = "192K"


def status(sub, node):
    st = [cbor2.loads(p) for t, p in list(sub.msgs) if t == "aegis/test/node/%s/status" % node]
    return st[-1] if st else {}


def counts(sub, node):
    return [cbor2.loads(cbor2.loads(p)["data"]) for t, p in list(sub.msgs)
            if t == "aegis/test/ev/%s/count/total" % node]


def test_flashed_board_runs_a_pushed_module_natively(tmp_path, broker):
    signer = Signer(str(tmp_path / "op"))
    pkg = tmp_path / "counter.pkg"
    pkg.write_bytes(signer.example("counter"))
    sub = Subscriber(broker, "aegis/test/#")
    board = UnixBoard("nat-1", tmp_path / "board", broker.url, [signer.pub], heap=HEAP)
    try:
        board.start()
        r = board.flash()
        assert "native wasm3 for x64: lib/wasm3.mpy" in r.stderr, r.stderr
        assert os.path.exists(tmp_path / "board" / "fs" / "lib" / "wasm3.mpy")
        board.wait_for("connected to broker")
        wait_for(lambda: status(sub, "nat-1").get("online"), 30, "board online")

        out = subprocess.run([sys.executable, "-m", "node.cli.main", "push", str(pkg),
                              "--to", "nat-1", "--broker", broker.url, "--fleet", "test",
                              "--timeout", "60"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr + board.console()
        assert "(native)" in out.stdout, out.stdout
        st = wait_for(lambda: [m for m in status(sub, "nat-1").get("modules", [])
                               if m["name"] == "counter" and m["state"] == "running"],
                      30, "status lists the module")
        assert st[0]["mode"] == "native"

        # Sensor events from the mesh -> wasm3 on the board -> count/total
        # emitted by the board, one per event, in order.
        for seq in range(1, 6):
            env = E.encode("tester", seq, int(time.time() * 1000), "sensor/t1",
                           cbor2.dumps(20 + seq), "op@1.0.0")
            sub.publish("aegis/test/ev/tester/sensor/t1", env)
        got = wait_for(lambda: counts(sub, "nat-1") if len(counts(sub, "nat-1")) >= 5 else None,
                       30, "5 count/total events from the board")
        assert got == [1, 2, 3, 4, 5], got
        envs = [cbor2.loads(p) for t, p in list(sub.msgs) if t == "aegis/test/ev/nat-1/count/total"]
        assert all(e["src"] == "nat-1" and e["mod"] == "counter@1.0.0" for e in envs)
        assert "Traceback" not in board.console(), board.console()[-2000:]
    finally:
        board.stop()


def test_flash_build_carries_the_wasm3_mpy_for_each_boards_arch(tmp_path):
    """`aegis flash` puts lib/wasm3.mpy of the board's arch into the files
    it copies (Pico W: armv6m, ESP32-C3: rv32imc); the classic ESP32 has no
    native build and is told it runs proxy mode."""
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    from mpylink import mpy
    from node import flash
    cfg = {"node_id": "x", "fleet": "test"}
    for name, arch in (("pico_w", "armv6m"), ("esp32c3", "rv32imc"), ("esp32", None)):
        lines = []
        out = tmp_path / name
        flash.build(flash.load_board(name), cfg, {}, str(out), log=lines.append)
        path = out / "lib" / "wasm3.mpy"
        if arch is None:
            assert not path.exists()
            assert any("runs its modules in proxy mode" in m for m in lines), lines
        else:
            assert mpy.read(path.read_bytes())["arch"] == arch
            assert any("native wasm3 for %s" % arch in m for m in lines), lines


NATIVE_UNIT = r"""
import json
from node.board.fsstore import FlashStore
from node.core.bus import Bus
from node.board import native


class Proxy:
    def __init__(self):
        self.started = []

    def start(self, rec, done):
        self.started.append(rec["name"])
        done(True, "proxied")


class Ports:
    def call(self, port, data):
        return b"\xa0"


class Board:
    def __init__(self, root):
        self.cfg, self.store, self.bus, self.mods = {}, FlashStore(root), Bus(), {}
        self.proxy, self.ports, self.emitted = Proxy(), Ports(), []

    def emit(self, rec, topic, data):
        self.emitted.append([rec["name"], topic, data.hex()])
        return any(topic.startswith(p) for p in rec["emit"])


b = Board(%(root)r)
assert native.available()
eng = native.NativeEngine(b)
out = {}
for name, sub, emit in %(mods)r:
    rec = {"name": name, "v": "1.0.0", "pkg": "pkgs/%%s.pkg" %% name, "size": 0,
           "sub": sub, "emit": emit, "ports": [], "mode": "native"}
    res = []
    eng.start(rec, lambda ok, detail: res.append([ok, detail]))
    out[name] = [rec["mode"]] + res[0]
    if rec["mode"] == "native" and res[0][0]:
        b.mods[name] = rec
        for f in sub:
            b.bus.subscribe(f, name)
for i in range(3):
    eng.deliver("sensor/t%%d" %% i, b"\x18\x15", "tester", "op@1")
out["emitted"] = b.emitted
out["stats"] = eng.stats()
out["proxied"] = b.proxy.started
print(json.dumps(out))
"""


def test_native_engine_runs_refuses_and_falls_back(tmp_path):
    """node/board/native.py on MicroPython with a stand-in board (real
    FlashStore, real Bus): a metered module runs natively and its emits go
    to board.emit; an unmetered one is handed to proxy mode; a metered one
    importing outside ABI v1 is refused, as a gateway refuses it."""
    import json
    signer = Signer(str(tmp_path / "op"))
    root = tmp_path / "store"
    (root / "pkgs").mkdir(parents=True)
    from conftest import example, read
    t, counter = example("counter")
    (root / "pkgs" / "counter.pkg").write_bytes(signer.example("counter"))
    (root / "pkgs" / "plain.pkg").write_bytes(
        signer.pack("plain", "1.0.0", counter, ["sensor/#"], ["count/"], meter=False))
    bad = read(os.path.join(ROOT, "tests", "modules", "forbidden_import.wasm"))
    (root / "pkgs" / "bad.pkg").write_bytes(signer.pack("bad", "1.0.0", bad, ["in/#"], ["out/"]))
    mods = [("counter", ["sensor/#"], ["count/"]), ("plain", ["sensor/#"], ["count/"]),
            ("bad", ["in/#"], ["out/"])]
    script = tmp_path / "unit.py"
    script.write_text(NATIVE_UNIT % {"root": str(root), "mods": mods})
    env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (ROOT, os.path.join(ROOT, "build",
                                                                             "firmware", "x64")))
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "micropython"), "-X",
                        "heapsize=1M", str(script)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["counter"][:2] == ["native", True], out
    assert out["plain"] == ["proxy", True, "proxied"] and out["proxied"] == ["plain"]
    assert out["bad"][0] == "native" and out["bad"][1] is False and "not in ABI v1" in out["bad"][2]
    # counter's count/total for each of the 3 events, CBOR uints 1, 2, 3
    assert [e[:2] for e in out["emitted"]] == [["counter", "count/total"]] * 3
    assert [e[2] for e in out["emitted"]] == ["01", "02", "03"]
    assert out["stats"]["native_ev"] == 3 and out["stats"]["native_fallbacks"] == 1
