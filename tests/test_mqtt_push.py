"""`aegis push` over a real Mosquitto to real gateway processes."""
import json
import os
import subprocess
import sys
import threading

from broker import broker  # noqa: F401 (fixture)
from conftest import ROOT, Signer, example
from gateway_proc import cli, wait_for
from host_sim.fleet import Fleet
from test_mqtt import mqtt_gw


def pad(wasm, total):
    """Append a custom section so the wasm is about `total` bytes."""
    body = b"\x03pad" + b"\0" * (total - len(wasm) - 8)
    n, leb = len(body), bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        leb.append(b | (0x80 if n else 0))
        if not n:
            break
    return wasm + b"\x00" + bytes(leb) + body


def push(broker, path, to, *extra, check=False, timeout=120):
    return cli("push", path, "--to", to, "--broker", broker.url, "--fleet", "test", *extra,
               check=check, timeout=timeout)


def fleet_json(broker, fleet="test"):
    r = cli("status", "--broker", broker.url, "--fleet", fleet, "--json")
    return {n["node"]: n for n in json.loads(r.stdout)["nodes"]}


def test_push_to_one_node_then_noop_then_refused(tmp_path, signer, broker):
    g = mqtt_gw(tmp_path, signer, broker)
    try:
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        r = push(broker, str(p), "gw1")
        assert r.returncode == 0, r.stderr
        assert "gw1: counter@1.0.0 running" in r.stdout and "100%" in r.stderr
        assert [(m["name"], m["version"]) for m in g.status()["modules"]] == [("counter", "1.0.0")]
        wait_for(lambda: fleet_json(broker)["gw1"]["modules"] == [
            {"name": "counter", "version": "1.0.0", "state": "running"}], what="fleet status")
        # Same version again: answered from is_active, no chunk sent.
        r = push(broker, str(p), "gw1")
        assert r.returncode == 0 and "sent 0 chunk messages" in r.stdout, r.stdout
        # Signed by a key the node does not trust: refused, named, exit 1.
        rogue = Signer(str(tmp_path / "rogue"))
        bad = tmp_path / "bad.pkg"
        bad.write_bytes(rogue.example("counter", version="2.0.0"))
        r = push(broker, str(bad), "gw1")
        assert r.returncode == 1
        assert "gw1 refused counter@2.0.0" in r.stderr and "unknown key" in r.stderr, r.stderr
        assert '"pushed module refused"' in g.logs()
        assert [m["version"] for m in g.status()["modules"]] == ["1.0.0"]
        r = push(broker, str(p), "nosuchnode")
        assert r.returncode == 1 and "no status" in r.stderr
    finally:
        g.stop()


def test_push_to_group_of_three_simulated_nodes(tmp_path, signer, broker):
    f = Fleet(3, broker.url, str(tmp_path / "fleet"), [signer.pub], fleet="test",
              groups=["lab"]).start()
    try:
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        r = push(broker, str(p), "group:lab", "--chunk", "256")
        assert r.returncode == 0, r.stderr
        for n in f.node_ids:
            assert "%s: counter@1.0.0 running" % n in r.stdout
        st = fleet_json(broker)
        wait_for(lambda: all(fleet_json(broker)[n]["modules"] for n in f.node_ids),
                 what="all three report the module")
        assert sorted(st) == sorted(f.node_ids)
        assert all(s["groups"] == ["lab"] and s["online"] for s in st.values())
        r = push(broker, str(p), "group:nobody")
        assert r.returncode == 1 and "no online node" in r.stderr
    finally:
        f.stop()
    # Clean stops leave an offline status behind (retained).
    assert not any(s["online"] for s in fleet_json(broker).values())


def test_push_resumes_after_broker_restart(tmp_path, signer, broker):
    g = mqtt_gw(tmp_path, signer, broker)
    try:
        t, wasm = example("counter")
        big = signer.pack("counter", "3.0.0", pad(wasm, 1 << 20), t["subscribe"], t["emit"])
        p = tmp_path / "big.pkg"
        p.write_bytes(big)
        n = (len(big) + 1023) // 1024
        proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "push", str(p), "--to",
                                 "gw1", "--broker", broker.url, "--fleet", "test", "--chunk",
                                 "1024"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        err = []
        th = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        th.start()
        wait_for(lambda: any("%" in x and " 0%" not in x for x in err), timeout=30,
                 what="transfer under way")
        broker.kill()           # kill -9 mid-transfer, then back on the same port
        broker.start()
        proc.wait(timeout=90)
        th.join(5)
        out = proc.stdout.read()     # small: only the final summary
        assert proc.returncode == 0, "".join(err)
        assert "reconnected" in "".join(err)
        assert "gw1: counter@3.0.0 running" in out
        sent = int(out.split("sent ")[1].split()[0])
        # Only what was in flight when the broker died is sent again.
        assert n <= sent <= n + 64, (sent, n)
        starts = [x for x in g.log_lines() if x["msg"] == "transfer started"]
        assert len(starts) == 1 and starts[0]["chunks"] == n
        assert [m["version"] for m in g.status()["modules"]] == ["3.0.0"]
    finally:
        g.stop()
