"""`aegis push --quic` to real gateway processes over real aioquic."""
from conftest import Signer
from gateway_proc import cli
from quic_proc import Fleet, addr, quic_gw


def qpush(path, g_addr, prefix, *extra, check=False, timeout=120):
    return cli("push", path, "--quic", g_addr, "--cert", prefix, *extra, check=check,
               timeout=timeout)


def test_push_installs_then_noop_then_refused(tmp_path, signer):
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1")
    try:
        ops = fleet.issue("ops")
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        r = qpush(str(p), addr(g), ops)
        assert r.returncode == 0, r.stderr
        assert "gw1: counter@1.0.0 running" in r.stdout, r.stdout
        assert "100%" in r.stderr
        assert [(m["name"], m["version"]) for m in g.status()["modules"]] == [("counter", "1.0.0")]
        # Same version again: answered from is_active, no chunk sent.
        r = qpush(str(p), addr(g), ops)
        assert r.returncode == 0 and "sent 0 chunk messages" in r.stdout, r.stdout
        # Signed by a key the node does not trust: refused with the reason.
        rogue = Signer(str(tmp_path / "rogue"))
        bad = tmp_path / "bad.pkg"
        bad.write_bytes(rogue.example("counter", version="2.0.0"))
        r = qpush(str(bad), addr(g), ops)
        assert r.returncode == 1
        assert "refused counter@2.0.0" in r.stderr and "unknown key" in r.stderr, r.stderr
        assert [m["version"] for m in g.status()["modules"]] == ["1.0.0"]
        st = g.status()["quic"]
        assert st["deploy_installed"] == 1 and st["deploy_refused"] == 1
    finally:
        g.stop()


def raw_client(mode, g_addr, ca, cert=None, key=None, timeout=60):
    import json
    import subprocess
    import sys
    from conftest import ROOT
    host, port = g_addr.rsplit(":", 1)
    args = [sys.executable, "tests/quic_client.py", mode, host, port, ca]
    if cert:
        args += [cert, key]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_clients_without_a_fleet_cert_get_nothing(tmp_path, signer):
    fleet = Fleet(tmp_path)
    other = Fleet(tmp_path, "other")
    g = quic_gw(tmp_path, signer, fleet, "gw1")
    try:
        a = addr(g)
        ops = fleet.issue("ops")
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        # 1. No client certificate at all.
        r = raw_client("nocert", a, ops + ".ca.crt")
        assert "no client certificate" in r.get("reason", ""), r
        assert r["bytes_received"] == 0
        # 2. A certificate of another fleet (trusting our server's CA, so it
        #    is the gateway that refuses).
        o = other.issue("intruder")
        for ext in ("crt", "key"):
            (tmp_path / ("mixed." + ext)).write_bytes(open("%s.%s" % (o, ext), "rb").read())
        (tmp_path / "mixed.ca.crt").write_bytes(open(ops + ".ca.crt", "rb").read())
        r = qpush(str(p), a, str(tmp_path / "mixed"), "--timeout", "30")
        assert r.returncode == 1, r.stderr
        assert "refused by the gateway" in r.stderr and "fleet's CA" in r.stderr, r.stderr
        # 3. The client's own check: a gateway of another fleet is refused too.
        r = qpush(str(p), a, o, "--timeout", "30")
        assert r.returncode == 1 and "TLS handshake" in r.stderr, r.stderr
        logs = g.log_lines()
        refused = [x for x in logs if x["msg"] == "quic client refused"]
        assert len(refused) >= 2, refused
        assert any("no client certificate" in x["reason"] for x in refused)
        assert any("not signed by this fleet's CA" in x["reason"] for x in refused)
        assert not [x for x in logs if x["msg"] == "transfer started"]
        assert g.status()["modules"] == []
        # The gateway keeps serving a client with a fleet certificate.
        r = qpush(str(p), a, ops)
        assert r.returncode == 0, r.stderr
        assert g.status()["quic"]["refused"] >= 2
    finally:
        g.stop()


def test_garbage_on_a_stream_closes_that_link_only(tmp_path, signer):
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1")
    try:
        a = addr(g)
        ops = fleet.issue("ops")
        r = raw_client("garbage", a, ops + ".ca.crt", ops + ".crt", ops + ".key")
        assert "garbage on stream" in r.get("reason", ""), r
        # On a mesh stream: a junk envelope is dropped (counted, logged), a
        # frame that is not a mesh message closes the link.
        r = raw_client("meshbad", a, ops + ".ca.crt", ops + ".crt", ops + ".key")
        assert "garbage on stream" in r.get("reason", "") and "not CBOR" in r["reason"], r
        assert g.status()["quic"]["bad_envelopes"] == 1
        assert any(x["msg"] == "bad envelope dropped" for x in g.log_lines())
        assert any(x["msg"] == "quic link closed by us" and "garbage" in x["reason"]
                   for x in g.log_lines())
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        assert qpush(str(p), a, ops).returncode == 0
    finally:
        g.stop()


def _start_push(path, g_addr, prefix, *extra):
    import subprocess
    import sys
    import threading
    from conftest import ROOT
    proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "push", path, "--quic",
                             g_addr, "--cert", prefix] + list(extra), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    th = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    th.start()
    return proc, err, th


def _big(signer, version, size=2 << 20):
    from conftest import example
    from test_mqtt_push import pad
    t, wasm = example("counter")
    return signer.pack("counter", version, pad(wasm, size), t["subscribe"], t["emit"])


def test_push_resumes_after_the_client_is_killed(tmp_path, signer):
    from gateway_proc import wait_for
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1")
    try:
        a, ops = addr(g), fleet.issue("ops")
        big = _big(signer, "3.0.0")
        p = tmp_path / "big.pkg"
        p.write_bytes(big)
        n = (len(big) + 1023) // 1024
        proc, err, th = _start_push(str(p), a, ops, "--chunk", "1024", "--window", "4")
        wait_for(lambda: any("% [" in x and " 0% [" not in x and "10% [" not in x
                             for x in err), timeout=60, what="transfer 20% under way")
        proc.kill()             # kill -9 mid-transfer
        proc.wait(timeout=10)
        th.join(5)
        assert g.status()["modules"] == []
        r = qpush(str(p), a, ops, "--chunk", "1024")
        assert r.returncode == 0, r.stderr
        assert "gw1: counter@3.0.0 running" in r.stdout, r.stdout
        sent = int(r.stdout.split("sent ")[1].split()[0])
        # Only the missing chunks went again (at least 20% had arrived).
        assert 0 < sent <= n * 0.8 + 64, (sent, n)
        starts = [x for x in g.log_lines() if x["msg"] == "transfer started"]
        assert len(starts) == 1 and starts[0]["chunks"] == n
        assert [m["version"] for m in g.status()["modules"]] == ["3.0.0"]
    finally:
        g.stop()


def test_push_survives_a_gateway_restart_mid_transfer(tmp_path, signer):
    from gateway_proc import wait_for
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1")
    port = int(addr(g).rsplit(":", 1)[1])
    g.stop()
    g = quic_gw(tmp_path, signer, fleet, "gw1", port=port)
    proc = None
    try:
        a, ops = addr(g), fleet.issue("ops")
        p = tmp_path / "big.pkg"
        p.write_bytes(_big(signer, "4.0.0"))
        proc, err, th = _start_push(str(p), a, ops, "--chunk", "1024", "--window", "4")
        wait_for(lambda: any("% [" in x and " 0% [" not in x for x in err), timeout=60,
                 what="transfer under way")
        g.kill()                # the gateway dies; the client keeps retrying
        g.start()
        proc.wait(timeout=120)
        th.join(5)
        out = proc.stdout.read()
        assert proc.returncode == 0, "".join(err)
        assert "reconnected to gw1" in "".join(err), "".join(err)
        assert "gw1: counter@4.0.0 running" in out, out
        starts = [x for x in g.log_lines() if x["msg"] == "transfer started"]
        # The restarted gateway resumed from what its store held.
        assert len(starts) == 2 and starts[1]["have"] > 0, starts
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        g.stop()


def test_a_peer_that_stops_reading_costs_bounded_memory(tmp_path, signer):
    """A fleet member opens a mesh stream and never acknowledges an event,
    then freezes (SIGSTOP): the gateway keeps at most `window` events in
    flight to it, drops the oldest of its outbox beyond outbox_max
    (counted), declares the link dead after idle_timeout, and serves
    others throughout."""
    import signal
    import subprocess
    import sys
    from conftest import ROOT
    from gateway_proc import read_lines, wait_for
    from quic_proc import emit_many, quic_stats
    from test_mqtt import install_counter
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1",
                quic_extra="window = 8\noutbox_max = 50\nidle_timeout = 3\n")
    lazy = None
    try:
        a, ops = addr(g), fleet.issue("ops")
        cert = fleet.issue("lazy")
        host, port = a.rsplit(":", 1)
        lazy = subprocess.Popen([sys.executable, "tests/quic_client.py", "mesh", host, port,
                                 cert + ".ca.crt", cert + ".crt", cert + ".key"], cwd=ROOT,
                                stdout=subprocess.PIPE)
        assert read_lines(lazy, 1, timeout=30) == ["READY"]
        wait_for(lambda: [p for p in quic_stats(g)["peers"] if p["node"] == "lazy"
                          and p["state"] == "up"], what="lazy peer up")
        install_counter(g, signer, tmp_path)
        emit_many(g, "sensor/x", range(100))

        def lazy_peer():
            return [p for p in quic_stats(g)["peers"] if p["node"] == "lazy"][0]
        wait_for(lambda: lazy_peer()["sent"] == 8, what="window filled")
        p = lazy_peer()
        assert p["inflight"] == 8 and p["outbox"] == 50 and p["outbox_dropped"] == 50, p
        lazy.send_signal(signal.SIGSTOP)        # and now it stops reading at all
        emit_many(g, "sensor/x", range(10))
        wait_for(lambda: lazy_peer()["state"] == "down", timeout=30, what="link declared dead")
        assert lazy_peer()["outbox"] == 50
        assert any(x["msg"] == "quic peer down" and x["remote"] == "lazy" for x in g.log_lines())
        # Served others all along.
        pk = tmp_path / "m.pkg"
        pk.write_bytes(signer.example("movavg"))
        assert qpush(str(pk), a, ops).returncode == 0
    finally:
        if lazy is not None:
            lazy.send_signal(signal.SIGCONT)
            lazy.kill()
            lazy.wait(10)
        g.stop()


def test_push_to_nothing_fails_clearly(tmp_path, signer):
    import socket
    fleet = Fleet(tmp_path)
    ops = fleet.issue("ops")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))        # a port nobody answers QUIC on
    try:
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        r = qpush(str(p), "127.0.0.1:%d" % u.getsockname()[1], ops, "--timeout", "3")
        assert r.returncode == 2 and "no QUIC answer from 127.0.0.1" in r.stderr, r.stderr
        r = qpush(str(p), "nohost", ops)
        assert r.returncode == 2 and "HOST:PORT" in r.stderr, r.stderr
        r = qpush(str(p), "127.0.0.1:1", str(tmp_path / "nocert"))
        assert r.returncode == 2 and "cannot load TLS files" in r.stderr, r.stderr
    finally:
        u.close()


def test_push_over_ipv6_loopback(tmp_path, signer):
    from quic_proc import quic_port
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1", listen=False,
                quic_extra='listen = "[::1]:0"\n')
    try:
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        r = qpush(str(p), "[::1]:%d" % quic_port(g), fleet.issue("ops"))
        assert r.returncode == 0 and "gw1: counter@1.0.0 running" in r.stdout, r.stderr
    finally:
        g.stop()
