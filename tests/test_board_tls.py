"""Boards over TLS and the broker ACL for proxy mode, against a real
Mosquitto configured by `aegis broker-config` (tests/secure_broker.py):
the real MicroPython runtime (flashed image, DER files converted by
node/flash_certs.py) with a client certificate, a real `aegis proxy` with
its own identity, the operator's `aegis push`.  A board with the wrong CA
is refused with a clear reason and keeps retrying with backoff; bad TLS
files are flash errors, or a clear board log line, never a crash loop."""
import os
import re
import subprocess
import sys
import time

import cbor2
import pytest

from conftest import ROOT, Signer
from gateway_proc import wait_for
from host_sim.boards import MICROPYTHON, ProxyHost, SourceBoard
from node import flash
from node.core import envelope as E
from secure_broker import SecureBroker, TlsClient

BOARDS = ("b1", "b2", "px1")
OK = ("Success", "No matching subscribers")     # PUBACK reasons of an allowed publish


@pytest.fixture
def sb(tmp_path):
    b = SecureBroker(tmp_path / "sb", proxies={"px1": ["b1"]}, certs=BOARDS).start()
    yield b
    b.kill()


def tls_board(tmp_path, sb, node_id, mqtt_lines, **kw):
    b = SourceBoard(node_id, tmp_path / node_id, sb.cert_url, kw.pop("keys"), **kw)
    with open(b.config, "a") as f:      # [mqtt] is the config's last table
        f.write(mqtt_lines)
    return b


def operator(sb, subscribe=("aegis/test/#",)):
    return TlsClient(sb.cert_url, cert=sb.prefix("operator"), subscribe=subscribe)


def test_board_over_tls_with_client_certificate_and_its_proxy_topics_only(tmp_path, sb):
    # Least privilege first (paho, MQTT 5: refusals are visible in PUBACK):
    # a board reaches its own proxy topics, not another board's; a proxy
    # host reaches the boards it serves, nothing else.
    b2 = TlsClient(sb.cert_url, cert=sb.prefix("b2"),
                   subscribe=["aegis/test/node/b1/proxy/down", "aegis/test/node/b2/proxy/down"])
    px = TlsClient(sb.cert_url, cert=sb.prefix("px1"))
    try:
        assert b2.publish("aegis/test/node/b2/proxy/up", b"x") in OK
        assert b2.publish("aegis/test/node/b2/proxy/pkg", b"x") in OK
        assert b2.publish("aegis/test/node/b1/proxy/up", b"x") == "Not authorized"
        assert b2.publish("aegis/test/node/b1/proxy/pkg", b"x") == "Not authorized"
        assert b2.publish("aegis/test/node/b2/proxy/down", b"x") == "Not authorized"
        assert px.publish("aegis/test/node/b1/proxy/down", b"to-b1") in OK
        assert px.publish("aegis/test/node/b1/proxy/pkg/reply", b"x") in OK
        assert px.publish("aegis/test/node/b2/proxy/down", b"to-b2") == "Not authorized"
        assert px.publish("aegis/test/node/b1/proxy/up", b"x") == "Not authorized"
        assert px.publish("aegis/test/ev/b1/facts/reply", b"x") == "Not authorized"
        op = operator(sb, subscribe=())
        try:        # b2 hears its own down topic, never b1's (sent first)
            op.publish("aegis/test/node/b1/proxy/down", b"secret-b1")
            op.publish("aegis/test/node/b2/proxy/down", b"for-b2")
        finally:
            op.close()
        wait_for(lambda: "aegis/test/node/b2/proxy/down" in b2.topics(), what="b2's own down")
        assert "aegis/test/node/b1/proxy/down" not in b2.topics(), b2.msgs
    finally:
        b2.close()
        px.close()

    # The real thing: board b1 over TLS with its certificate (cert = PREFIX,
    # as on a gateway), its proxy host px1 with its own, an operator push.
    signer = Signer(str(tmp_path / "op"))
    spy = operator(sb)
    board = tls_board(tmp_path, sb, "b1", 'cert = "%s"\n' % sb.prefix("b1"), keys=[signer.pub],
                      extra={"engine": "proxy", "status_ms": 1000})
    proxy = ProxyHost("px1", tmp_path / "px1", sb.cert_url, [signer.pub], ["b1"])
    with open(proxy.config) as f:
        conf = f.read()
    with open(proxy.config, "w") as f:
        f.write(conf.replace('url = "%s"\n' % sb.cert_url,
                             'url = "%s"\ncert = "%s"\n' % (sb.cert_url, sb.prefix("px1"))))
    try:
        board.start()
        proxy.start()
        board.wait_for("connected to broker", 30)
        assert os.path.exists(os.path.join(board.work, "certs", "client.key.der"))
        wait_for(lambda: "proxy host connected" in proxy.logs(), 30, "proxy up")
        (tmp_path / "f.pkg").write_bytes(signer.example("facts"))
        r = subprocess.run([sys.executable, "-m", "node.cli.main", "push", str(tmp_path / "f.pkg"),
                            "--to", "b1", "--broker", sb.cert_url, "--fleet", "test",
                            "--cert", sb.prefix("operator"), "--timeout", "60"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "running on px1 (proxy)" in r.stdout, r.stdout + r.stderr
        env = E.encode("operator", 1, int(time.time() * 1000), "facts/request", b"", "op@1.0.0")
        assert spy.publish("aegis/test/ev/operator/facts/request", env) in OK

        def reply():
            for t, p in list(spy.msgs):
                if t == "aegis/test/ev/b1/facts/reply":
                    return cbor2.loads(cbor2.loads(p)["data"])
        facts = wait_for(reply, 30, "the board's reply over TLS")
        assert facts["node_id"] == "b1" and facts["board"] == "unix"
        def counts():
            st = [cbor2.loads(p) for t, p in list(spy.msgs) if t == "aegis/test/node/b1/status"]
            return st and st[-1]["online"] and st[-1]["counts"].get("proxy_calls", 0) >= 1 \
                and st[-1]["counts"]
        c = wait_for(counts, 20, "a status counting the port call")
        print("\nboard heap over TLS: %d bytes in use" % c["heap"])
        assert "link down" not in board.console()
    finally:
        proxy.stop()
        board.stop()
        spy.close()


def connections(sb):
    with open(sb.log_path) as f:
        return len(re.findall(r"New connection from 127\.0\.0\.1:\d+ on port %d" % sb.port,
                              f.read()))


def test_board_with_the_wrong_ca_is_refused_clearly_and_retries_with_backoff(tmp_path, sb):
    signer = Signer(str(tmp_path / "op"))
    # The other fleet's CA: the broker's certificate does not chain to it.
    board = tls_board(tmp_path, sb, "b1", 'ca = "%s.ca.crt"\ncert = "%s.crt"\nkey = "%s.key"\n'
                      % (sb.prefix("rogue-gw1"), sb.prefix("b1"), sb.prefix("b1")),
                      keys=[signer.pub])
    try:
        board.start()
        board.wait_for("TLS: the broker's certificate is not trusted", 30)
        assert "is ca the CA that signed the broker's certificate?" in board.console()
        # It keeps trying, at the backoff's pace (backoff_max_ms = 1000 in
        # host_sim's board config), not in a tight loop; one log line per
        # reason, not one per attempt.
        n0, t0 = connections(sb), time.monotonic()
        wait_for(lambda: connections(sb) >= n0 + 3, 30, "three more attempts")
        n1, t1 = connections(sb), time.monotonic()
        assert (n1 - n0) <= (t1 - t0) / 0.5 + 2, (n1 - n0, t1 - t0)
        assert board.console().count("is not trusted") == 1, board.console()
        assert board.proc.poll() is None and "runtime crashed" not in board.console()
    finally:
        board.stop()


def test_bad_tls_files_are_flash_errors_or_clear_board_errors(tmp_path, sb):
    signer = Signer(str(tmp_path / "op"))
    unix = flash.load_board("unix")

    def config(mqtt_lines):
        p = tmp_path / "node.toml"
        p.write_text('node_id = "b1"\nfleet = "test"\ntrusted_keys = ["%s"]\n[mqtt]\n%s'
                     % (signer.pub, mqtt_lines))
        return str(p)
    for lines, want in (
            ('url = "%s"\ncert = "%s"\n' % (sb.cert_url, tmp_path / "nope"), "neither"),
            ('url = "%s"\n' % sb.cert_url, "needs [mqtt] ca"),
            ('url = "%s"\nca = "%s"\n' % (sb.cert_url, tmp_path / "missing.crt"), "does not exist"),
            ('url = "%s"\nca = "%s.crt"\ncert = "%s.crt"\nkey = "%s.key"\n'
             % (sb.cert_url, sb.prefix("b1"), sb.prefix("b1"), sb.prefix("b2")), "does not belong"),
            ('url = "%s"\nca = "%s.key"\n' % (sb.cert_url, sb.prefix("b1")), "not a PEM"),
            ('url = "ftp://x"\n', "must be mqtt://")):
        with pytest.raises(flash.FlashError, match=re.escape(want)):
            flash.board_config(unix, config(lines))

    # A file broken on the board's flash: a clear log line, retried slowly,
    # and the runtime keeps running (no crash loop).
    board = tls_board(tmp_path, sb, "b1", 'cert = "%s"\n' % sb.prefix("b1"), keys=[signer.pub])
    board.start()
    try:
        board.wait_for("connected to broker", 30)
    finally:
        board.kill()
    ca_der = os.path.join(board.work, "certs", "ca.der")
    with open(ca_der, "rb") as f:
        good = f.read()
    with open(ca_der, "wb") as f:
        f.write(b"not a certificate")
    spy = operator(sb, subscribe=("aegis/test/node/b1/status",))
    board.proc = subprocess.Popen([MICROPYTHON, "-X", "heapsize=" + board.heap, "-c",
                                   "import main"], cwd=board.work, stdout=board._out,
                                  stderr=subprocess.STDOUT)
    try:
        board.wait_for("TLS ca certs/ca.der unusable", 30)
        board.wait_for("re-run aegis flash", 5)
        assert board.proc.poll() is None and "runtime crashed" not in board.console()
        # Each retry reads the files again: once fixed, the board connects and
        # its status says why the link was down.
        with open(ca_der, "wb") as f:
            f.write(good)
        board.wait_for("connected to broker", 30, count=2)

        def mqtt_info():
            for t, p in reversed(list(spy.msgs)):
                st = cbor2.loads(p)
                if st.get("online"):
                    return st.get("mqtt")
        info = wait_for(mqtt_info, 20, "online status")
        assert info["errors"]["tls"] >= 1 and "certs/ca.der unusable" in info["last_error"], info
    finally:
        board.stop()
        spy.close()

    # The host name is checked too: the broker's certificate names
    # 127.0.0.1 and "broker", not "localhost" (also loopback).
    other = SourceBoard("b2", tmp_path / "b2", sb.cert_url.replace("127.0.0.1", "localhost"),
                        [signer.pub])
    with open(other.config, "a") as f:
        f.write('cert = "%s"\n' % sb.prefix("b2"))
    other.start()
    try:
        other.wait_for("TLS: the broker's certificate does not name this host", 30)
    finally:
        other.stop()


def test_board_with_a_password_over_server_tls(tmp_path, sb):
    """The 8884 listener: server TLS with the fleet CA, user name and a
    password from password_file (read into aegis.json by aegis flash); a
    wrong password is refused as a login failure, retried slowly."""
    signer = Signer(str(tmp_path / "op"))
    (tmp_path / "gw3.pass").write_text(sb.pw["gw3"] + "\n")
    (tmp_path / "bad.pass").write_text("wrong\n")
    boards = []
    try:
        for node, pw in (("gw3", "gw3.pass"), ("gw2", "bad.pass")):
            b = SourceBoard(node, tmp_path / node, sb.pw_url, [signer.pub])
            with open(b.config, "a") as f:
                f.write('ca = "%s.ca.crt"\nusername = "%s"\npassword_file = "%s"\n'
                        % (sb.prefix("gw1"), node, tmp_path / pw))
            boards.append(b.start())
        boards[0].wait_for("connected to broker", 30)
        boards[1].wait_for("link down (auth, 1 times): the broker refused the login: "
                           "not authorized", 30)
        assert '"password": "%s"' % sb.pw["gw3"] in open(os.path.join(boards[0].work,
                                                                      "aegis.json")).read()
    finally:
        for b in boards:
            b.stop()
