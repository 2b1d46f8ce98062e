"""CI flashes a simulated board and it joins the mesh (issue 4):

`aegis flash --board unix --port <pty>` into a real MicroPython Unix-port
process behind socat, which boots the runtime from the copied .mpy files,
comes online on a real Mosquitto (retained status), receives a module with
`aegis push` and runs it in proxy mode on a real `aegis proxy` (wasm3); the
module's port call is answered by the board and its events leave the board
under the board's id.  Then the broker restarts and no event is lost."""
import os
import subprocess
import sys
import time

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import ROOT, Signer
from gateway_proc import wait_for
from host_sim.boards import ProxyHost, UnixBoard
from node.core import envelope as E


def status(sub, node):
    st = [cbor2.loads(p) for t, p in list(sub.msgs) if t == "aegis/test/node/%s/status" % node]
    return st[-1] if st else None


def request(sub, seq, src="tester"):
    env = E.encode(src, seq, int(time.time() * 1000), "facts/request", b"", "op@1.0.0")
    sub.publish("aegis/test/ev/%s/facts/request" % src, env)


def replies(sub, node):
    return [cbor2.loads(p) for t, p in list(sub.msgs) if t == "aegis/test/ev/%s/facts/reply" % node]


def test_flash_boot_push_proxy_and_broker_restart(tmp_path, broker):
    signer = Signer(str(tmp_path / "op"))
    pkg = tmp_path / "facts.pkg"
    pkg.write_bytes(signer.example("facts"))
    sub = Subscriber(broker, "aegis/test/#")
    # Proxy mode on purpose, even where the flash image carries wasm3.mpy.
    board = UnixBoard("board-1", tmp_path / "board", broker.url, [signer.pub],
                      extra={"engine": "proxy"})
    proxy = ProxyHost("gw-1", tmp_path / "gw", broker.url, [signer.pub], ["board-1"])
    try:
        board.start()
        r = board.flash()
        assert "[3/3] starting the runtime" in r.stderr
        # The runtime's bytecode is a ROMFS image that the board maps outside
        # its heap (docs/BOARDS.md "Flashed layout"), not plain .mpy files.
        fs = tmp_path / "board" / "fs"
        assert not os.path.exists(fs / "lib" / "node")
        assert os.path.exists(fs / "lib" / "rommap.mpy")
        img = (fs / "romfs.img").read_bytes()
        assert img[:3] == b"\xd2\xcd\x31"           # ROMFS magic
        assert b"runtime.mpy" in img and b"transfer.mpy" in img
        # Only what the board imports goes on it: no gateway-only core code.
        assert b"metering.mpy" not in img
        board.wait_for("connected to broker")
        st = wait_for(lambda: status(sub, "board-1"), 30, "board status")
        assert st["online"] and st["mode"] == "proxy" and st["board"] == "unix"
        assert st["max_chunk"] == 1024 and "facts" in st["ports"]

        proxy.start()
        wait_for(lambda: "proxy host connected" in proxy.logs(), 30, "proxy connected")
        out = subprocess.run([sys.executable, "-m", "node.cli.main", "push", str(pkg),
                              "--to", "board-1", "--broker", broker.url, "--fleet", "test",
                              "--timeout", "120"], cwd=ROOT, capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr + board.console()
        assert "running on gw-1 (proxy)" in out.stdout
        wait_for(lambda: any(m["name"] == "facts" and m["state"] == "running"
                             for m in (status(sub, "board-1") or {}).get("modules", [])),
                 30, "status lists the module")

        # One event through the whole loop: mesh -> board -> proxy (wasm3)
        # -> port call answered by the board -> emit -> board's outbox -> mesh.
        request(sub, 1)
        rep = wait_for(lambda: replies(sub, "board-1"), 30, "facts/reply from the board")
        env = rep[0]
        assert env["src"] == "board-1" and env["mod"] == "facts@1.0.0"
        facts = cbor2.loads(env["data"])
        assert facts["node_id"] == "board-1" and facts["board"] == "unix"

        # Broker restart with requests in flight.  Nothing the board accepted
        # is lost: every emit it took (counted in its status) reaches the
        # mesh, exactly once after dedup by (src, seq); requests sent after
        # the restart are all answered.  (A request caught by the restart
        # while its port call is in the air gets EIO in the module, by design.)
        for i in range(2, 12):
            request(sub, i)
        broker.restart()
        board.wait_for("connected to broker", 60, count=2)
        wait_for(lambda: proxy.logs().count("proxy host connected") >= 2, 60, "proxy back")
        wait_for(lambda: sub.c.is_connected(), 30, "subscriber back")
        for i in range(12, 22):
            request(sub, i)

        def settled():
            st = status(sub, "board-1") or {}
            c = st.get("counts", {})
            envs = replies(sub, "board-1")
            seqs = {e["seq"] for e in envs}
            done = (c.get("forwarded", 0) == c.get("proxy_emits", -1) == len(seqs) >= 11
                    and c.get("outbox_len") == 0)
            return done and (st, envs, seqs)
        st, envs, seqs = wait_for(settled, 120, "every accepted emit forwarded and seen")
        assert st["counts"]["outbox_dropped"] == 0
        assert len(seqs) <= 21, "a request ran twice"
    finally:
        proxy.stop()
        board.stop()
        sub.close()
    print(board.console()[-2000:])
