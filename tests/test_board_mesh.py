"""host_sim mixes CPython gateways and real MicroPython boards on one
broker: a group push reaches both kinds of node, and one mesh event is
answered by each, the board's module running in proxy mode."""
import time

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import Signer
from gateway_proc import wait_for
from host_sim.boards import ProxyHost, SourceBoard
from host_sim.fleet import Fleet
from node.core import envelope as E
from test_board_runtime import push


def test_group_push_to_a_gateway_and_a_board(tmp_path, broker):
    op = Signer(str(tmp_path / "op"))
    sub = Subscriber(broker, "aegis/test/ev/#")
    fleet = Fleet(1, broker.url, str(tmp_path / "gws"), [op.pub], fleet="test", groups=["lab"],
                  extra='\n[ports.facts]\nadapter = "node_facts"\n')
    board = SourceBoard("pico-sim", tmp_path / "board", broker.url, [op.pub], groups=["lab"],
                        extra={"engine": "proxy"})
    proxy = ProxyHost("sim-1", tmp_path / "proxy", broker.url, [op.pub], ["pico-sim"])
    try:
        fleet.start()
        board.start()
        proxy.start()
        board.wait_for("connected to broker")
        wait_for(lambda: "proxy host connected" in proxy.logs(), 20, "proxy up")
        (tmp_path / "f.pkg").write_bytes(op.example("facts"))
        r = push(broker, tmp_path / "f.pkg", to="group:lab")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "pico-sim: facts@1.0.0 running on sim-1 (proxy)" in r.stdout
        assert "sim-1: facts@1.0.0" in r.stdout

        env = E.encode("tester", 1, int(time.time() * 1000), "facts/request", b"", "op@1.0.0")
        sub.publish("aegis/test/ev/tester/facts/request", env)

        def answers():
            got = {}
            for t, p in list(sub.msgs):
                if t.endswith("/facts/reply"):
                    e = cbor2.loads(p)
                    got[e["src"]] = cbor2.loads(e["data"])
            return len(got) == 2 and got
        got = wait_for(answers, 30, "a reply from the gateway and from the board")
        assert got["sim-1"]["node_id"] == "sim-1" and got["sim-1"]["system"] == "Linux"
        assert got["pico-sim"]["node_id"] == "pico-sim" and got["pico-sim"]["board"] == "unix"
    finally:
        proxy.stop()
        board.stop()
        fleet.stop()
        sub.close()
