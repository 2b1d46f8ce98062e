"""The real gateway daemon, driven through the real `aegis` CLI."""
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading

from conftest import ROOT, FIXTURES
from gateway_proc import Gateway, cli, gw, read_lines, wait_for  # noqa: F401 (gw: fixture)


def write(tmp_path, name, data):
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def test_pack_install_status_events(gw, signer, tmp_path):
    wasm = os.path.join(ROOT, "modules/threshold/threshold.wasm")
    pkg = str(tmp_path / "t.pkg")
    r = cli("pack", wasm, "--name", "threshold", "--version", "1.0.0", "--subscribe",
            "sensor/+/temp", "config/threshold", "--emit", "alarm/", "--key",
            signer.prefix + ".key", "--out", pkg)
    assert "packed threshold@1.0.0" in r.stdout
    r = gw.cli("install", pkg)
    assert "threshold@1.0.0 is running" in r.stdout
    st = gw.status()
    assert st["node_id"] == "gw1"
    assert [(m["name"], m["version"], m["state"]) for m in st["modules"]] == \
        [("threshold", "1.0.0", "running")]
    gw.cli("emit", "sensor/k7/temp", "--json", "35.5")
    lines = wait_for(lambda: [json.loads(x) for x in
                              gw.cli("events", "--json", "--topic", "alarm/#").stdout.splitlines()],
                     what="alarm event")
    assert lines[0]["topic"] == "alarm/k7" and lines[0]["src"] == "gw1"
    assert lines[0]["data"] == {"value": 35.5, "threshold": 30.0}
    assert lines[0]["mod"] == "threshold@1.0.0"
    out = gw.cli("events").stdout
    assert "sensor/k7/temp" in out and "alarm/k7" in out
    assert "threshold" in gw.cli("modules").stdout
    # Same version again is a no-op, and says so.
    assert "already active" in gw.cli("install", pkg).stdout


def test_refused_installs_exit_nonzero_with_reason(gw, signer, tmp_path):
    gw.cli("install", write(tmp_path, "c.pkg", signer.example("counter")))
    bad = [
        (signer.pack("counter", "2.0.0", open(FIXTURES + "/forbidden_import.wasm", "rb").read()),
         "not in ABI v1"),
        (signer.example("counter")[:-5], "truncated"),
        (signer.example("counter", version="0.9.0"), "downgrade"),
        (b"garbage", "bad magic"),
    ]
    for data, msg in bad:
        r = gw.cli("install", write(tmp_path, "bad.pkg", data), check=False)
        assert r.returncode == 1 and msg in r.stderr, r.stderr
    r = gw.cli("install", str(tmp_path / "missing.pkg"), check=False)
    assert r.returncode == 2 and "cannot read" in r.stderr
    assert [(m["version"], m["state"]) for m in gw.status()["modules"]] == [("1.0.0", "running")]
    r = gw.cli("emit", "bad/#", "--json", "1", check=False)
    assert r.returncode == 1 and "must not contain" in r.stderr
    r = gw.cli("emit", "x", "--json", "{nope", check=False)
    assert r.returncode == 2
    r = gw.cli("emit", "sensor/big", "--json", "\"%s\"" % ("x" * 70000), check=False)
    assert r.returncode == 1 and "over the 65536 limit" in r.stderr
    r = gw.cli("emit", "$aegis/module/x/active", "--json", "1", check=False)
    assert r.returncode == 1 and "reserved" in r.stderr


def test_follow_streams_live_events(gw, signer, tmp_path):
    gw.cli("install", write(tmp_path, "c.pkg", signer.example("counter")))
    # --last replays the ring before streaming live, atomically in the daemon,
    # so events emitted while the follower is still connecting are not missed.
    f = subprocess.Popen([sys.executable, "-m", "node.cli.main", "events", "--follow", "--json",
                          "--last", "1000", "--topic", "count/#", "--socket", gw.sock],
                         cwd=ROOT, stdout=subprocess.PIPE)
    try:
        for i in range(3):
            gw.cli("emit", "sensor/a", "--json", str(i))
        got = [json.loads(x) for x in read_lines(f, 3)]
        assert [g["data"] for g in got] == [1, 2, 3]
        gw.cli("emit", "sensor/a", "--json", "9")
        assert json.loads(read_lines(f, 1)[0])["data"] == 4
    finally:
        f.terminate()
        f.wait(timeout=10)
    # The daemon is fine after a follower hangs up.
    assert gw.status()["node_id"] == "gw1"


def test_hostile_control_clients_do_not_hurt(gw):
    for junk in [b"\xff\xff\xff\xff", b"\x00\x00\x00\x03abc", b"\x00\x00\x00\x01\x80", b""]:
        s = socket.socket(socket.AF_UNIX)
        s.connect(gw.sock)
        s.sendall(junk)
        s.close()
    r = gw.cli("status", "--json")
    assert json.loads(r.stdout)["node_id"] == "gw1"


def test_sigterm_stops_cleanly(gw):
    assert gw.stop() == 0
    assert not os.path.exists(gw.sock)
    assert gw.log_lines()[-1]["msg"] == "stopped"
    r = cli("status", sock=gw.sock, check=False)
    assert r.returncode == 2 and "no gateway control socket" in r.stderr


def test_kill9_during_installs_leaves_old_or_new(tmp_path, signer):
    """kill -9 at random moments while versions are being installed: after a
    restart one of the two versions is active and serving, never a broken one."""
    g = Gateway(tmp_path, [signer.pub])
    pkgs = [write(tmp_path, "c%d.pkg" % i, signer.example("counter", version="1.0.%d" % i))
            for i in range(6)]
    g.start()
    g.cli("install", pkgs[0])
    rnd = random.Random(7)
    for i in range(1, 6):
        p = subprocess.Popen([sys.executable, "-m", "node.cli.main", "install", pkgs[i],
                              "--socket", g.sock], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        threading.Event().wait(rnd.uniform(0.0, 0.25))  # a random moment, not a sync point
        g.kill()
        p.wait(timeout=10)
        g.start()
        mods = g.status()["modules"]
        assert len(mods) == 1 and mods[0]["state"] == "running"
        assert mods[0]["version"] in ("1.0.%d" % (i - 1), "1.0.%d" % i)
        if mods[0]["version"] != "1.0.%d" % i:
            g.cli("install", pkgs[i])
        g.cli("emit", "sensor/x", "--json", "1")
        wait_for(lambda: g.cli("events", "--topic", "count/total").stdout, what="count event")
    g.stop()


class _Web(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_ports_bound_by_config_and_rebound_live(tmp_path, signer):
    from node.core import cbor
    web = http.server.HTTPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    port = web.server_address[1]
    g = Gateway(tmp_path, [signer.pub], extra='[ports.facts]\nadapter = "node_facts"\n').start()
    try:
        g.cli("install", write(tmp_path, "f.pkg", signer.example("facts")))
        g.cli("emit", "facts/request", "--json", "{}")
        ev = wait_for(lambda: [json.loads(x) for x in
                               g.cli("events", "--json", "--topic", "facts/reply").stdout.splitlines()],
                      what="facts reply")
        assert ev[0]["data"]["node_id"] == "gw1"
        # Rebind the same port to the HTTP adapter, limited to our test server.
        g.write_config([signer.pub], extra='[ports.facts]\nadapter = "http"\nallow = ["127.0.0.1:%d"]\n'
                       % port)
        assert "facts" in g.cli("reload").stdout
        url = "http://127.0.0.1:%d/x" % port
        g.cli("emit", "facts/request", "--hex", cbor.dumps({"url": url}).hex())
        ev = wait_for(lambda: [json.loads(x) for x in
                               g.cli("events", "--json", "--topic", "facts/reply").stdout.splitlines()
                               if "status" in x], what="http reply")
        assert ev[0]["data"]["status"] == 200
        assert bytes.fromhex(ev[0]["data"]["body"]["hex"]) == b"hello from /x"
        # A host outside `allow` is refused (the module logs the failed call).
        g.cli("emit", "facts/request", "--hex",
              cbor.dumps({"url": "http://127.0.0.2:%d/" % port}).hex())
        wait_for(lambda: "port call failed" in g.logs(), what="refused call logged")
        # A broken config is refused and the old one kept.
        g.write_config([signer.pub], extra='[ports.facts]\nadapter = "teleport"\n')
        r = g.cli("reload", check=False)
        assert r.returncode == 1 and "unknown adapter" in r.stderr
        assert g.status()["ports"] == ["facts"]
    finally:
        g.stop()
        web.shutdown()
