"""MQTT over TLS with the fleet CA, client certificates, passwords and the
ACL of docs/SECURITY.md, against a real Mosquitto so configured
(tests/secure_broker.py): real gateway processes, the real `aegis` CLI."""
import os
import subprocess
import sys

import cbor2
import pytest

from conftest import ROOT
from gateway_proc import Gateway, cli, wait_for
from node.mqtt import brokerconf
from secure_broker import SecureBroker, TlsClient


@pytest.fixture
def sb(tmp_path):
    b = SecureBroker(tmp_path / "sb", groups={"lab": ["gw1"]}).start()
    yield b
    b.kill()


def envelope(src, seq, topic, data=b"\x01"):
    return cbor2.dumps({"src": src, "seq": seq, "ts": 1, "topic": topic, "data": data,
                        "mod": "ext@1.0.0"}, canonical=True)


def secure_gw(tmp_path, signer, sb, mqtt, node_id="gw1", wait_connect=True):
    d = tmp_path / node_id
    d.mkdir(exist_ok=True)
    g = Gateway(d, [signer.pub], node_id=node_id, extra="[mqtt]\n" + mqtt).start()
    if wait_connect:
        wait_for(lambda: '"mqtt connected"' in g.logs(), timeout=20, what="mqtt connected")
    return g


def cert_gw(tmp_path, signer, sb, node_id="gw1", groups='["lab"]'):
    # cert = PREFIX: PREFIX.crt, PREFIX.key and the fleet CA PREFIX.ca.crt
    return secure_gw(tmp_path, signer, sb, 'url = "%s"\ncert = "%s"\ngroups = %s\n'
                     % (sb.cert_url, sb.prefix(node_id), groups), node_id)


def op(sb, *args, who="cert", check=False, timeout=60):
    """`aegis` against the broker as the operator (certificate or password)."""
    login = (["--cert", sb.prefix("operator")] if who == "cert" else
             ["--ca", sb.prefix("operator") + ".ca.crt", "--username", "operator",
              "--password", sb.pw["operator"]])
    url = sb.cert_url if who == "cert" else sb.pw_url
    return cli(*args, "--broker", url, "--fleet", "test", *login, check=check,
               timeout=timeout)


def test_gateway_over_mqtts_forwards_events_and_operator_pushes(tmp_path, signer, sb):
    g = cert_gw(tmp_path, signer, sb)
    # gw3 logs in with a password (kept in a file) on the TLS password listener.
    (tmp_path / "gw3.pass").write_text(sb.pw["gw3"] + "\n")
    g3 = secure_gw(tmp_path, signer, sb, 'url = "%s"\nca = "%s.ca.crt"\nusername = "gw3"\n'
                   'password_file = "%s"\n' % (sb.pw_url, sb.prefix("gw1"), tmp_path / "gw3.pass"),
                   node_id="gw3")
    # An observer on a node's password account: nodes may read fleet events.
    watch = TlsClient(sb.pw_url, username="gw2", password=sb.pw["gw2"],
                      ca_file=sb.prefix("gw1") + ".ca.crt", subscribe=["aegis/test/ev/#"])
    try:
        p = tmp_path / "c.pkg"
        p.write_bytes(signer.example("counter"))
        r = op(sb, "push", str(p), "--to", "gw1")
        assert r.returncode == 0, r.stderr
        assert "gw1: counter@1.0.0 running" in r.stdout
        for i in range(3):
            g.cli("emit", "sensor/a", "--json", str(i))
        wait_for(lambda: len(watch.msgs) >= 3, what="3 forwarded events over mqtts")
        assert watch.topics() == ["aegis/test/ev/gw1/count/total"] * 3
        assert [cbor2.loads(cbor2.loads(m)["data"]) for _, m in watch.msgs] == [1, 2, 3]
        # Fleet status over the password listener, as the operator.
        r = op(sb, "status", "--json", who="password")
        assert r.returncode == 0, r.stderr
        assert '"node": "gw1"' in r.stdout and '"online": true' in r.stdout
        assert g.status()["mqtt"]["last_error"] is None
        # gw3, on its password, takes a push and forwards its module's events.
        r = op(sb, "push", str(p), "--to", "gw3")
        assert r.returncode == 0 and "gw3: counter@1.0.0 running" in r.stdout, r.stderr
        g3.cli("emit", "sensor/b", "--json", "1")
        wait_for(lambda: "aegis/test/ev/gw3/count/total" in watch.topics(), what="gw3 event")
    finally:
        watch.close()
        g3.stop()
        g.stop()


def test_a_node_cannot_impersonate_another(tmp_path, signer, sb):
    g = cert_gw(tmp_path, signer, sb)
    spy = TlsClient(sb.pw_url, username="operator", password=sb.pw["operator"],
                    ca_file=sb.prefix("gw1") + ".ca.crt", subscribe=["aegis/test/#"])
    try:
        g.cli("install", str(_pkg(tmp_path, signer)))
        wait_for(lambda: "aegis/test/node/gw1/status" in spy.topics(), what="gw1 status")
        real_status = [m for t, m in spy.msgs if t == "aegis/test/node/gw1/status"][-1]
        # gw2 holds a valid fleet certificate, and tries everything as gw1/gw3.
        gw2 = TlsClient(sb.cert_url, cert=sb.prefix("gw2"), client_id="aegis-test-gw1")
        forged = {"aegis/test/ev/gw3/sensor/x": envelope("gw3", 1, "sensor/x"),
                  "aegis/test/ev/gw1/count/total": envelope("gw1", 99, "count/total"),
                  "aegis/test/node/gw1/status": b"\xa0",
                  "aegis/test/node/gw1/deploy/reply": b"\x00",
                  "aegis/test/node/gw1/deploy": b"\x00",
                  "aegis/test/group/lab/deploy": b"\x00"}
        for topic, payload in forged.items():
            assert gw2.publish(topic, payload, retain=topic.endswith("status")) \
                == "Not authorized", topic
        # Its own topics work: the marker is delivered, after (and so
        # instead of) anything forged above on the same connection.
        assert gw2.publish("aegis/test/ev/gw2/sensor/x", envelope("gw2", 1, "sensor/x")) \
            == "Success"
        wait_for(lambda: "aegis/test/ev/gw2/sensor/x" in spy.topics(), what="gw2's own event")
        assert not set(forged.items()) & set(spy.msgs)
        # gw1 took gw2's event (counted once) and never saw gw3's.
        wait_for(lambda: g.status()["mqtt"]["received"] == 1, what="gw1 received gw2's event")
        evs = g.cli("events", "--json", "--topic", "sensor/#").stdout
        assert '"src": "gw2"' in evs and '"gw3"' not in evs
        # gw2 chose gw1's client id, yet gw1 was not pushed off the broker
        # (use_username_as_clientid), and gw1's retained status is its own.
        assert '"mqtt disconnected' not in g.logs()
        # A node cannot read another node's deploy topic either (mosquitto
        # grants the subscription and withholds the messages).
        gw2.c.subscribe([("aegis/test/node/gw1/deploy", 1), ("aegis/test/ev/gw3/mark", 1)])
        wait_for(lambda: gw2.subscribed, what="gw2 SUBACK")
        assert spy.publish("aegis/test/node/gw1/deploy", b"\x00") == "Success"
        assert spy.publish("aegis/test/ev/gw3/mark", b"m") == "Success"
        wait_for(lambda: "aegis/test/ev/gw3/mark" in gw2.topics(), what="mark")
        assert "aegis/test/node/gw1/deploy" not in gw2.topics()
        gw2.close()
        spy.close()     # one connection per identity: make way for the next
        fresh = TlsClient(sb.cert_url, cert=sb.prefix("operator"),
                          subscribe=["aegis/test/node/gw1/status"])
        wait_for(lambda: fresh.msgs, what="retained status")
        assert cbor2.loads(fresh.msgs[0][1])["node"] == "gw1" and fresh.msgs[0][1] != b"\xa0"
        assert cbor2.loads(real_status)["online"] is True
        fresh.close()
    finally:
        spy.close()
        g.stop()


def _pkg(tmp_path, signer, version=None):
    p = tmp_path / ("c-%s.pkg" % (version or "1"))
    p.write_bytes(signer.example("counter", version=version))
    return p


def test_push_needs_the_operators_credentials(tmp_path, signer, sb):
    g = cert_gw(tmp_path, signer, sb)
    p = _pkg(tmp_path, signer)
    try:
        # Another node's certificate: refused by the ACL, clearly, exit 1.
        r = cli("push", str(p), "--to", "gw1", "--broker", sb.cert_url, "--fleet", "test",
                "--cert", sb.prefix("gw2"), check=False, timeout=60)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "Not authorized" in r.stderr and "operator's credentials" in r.stderr
        # A node's password account: same.
        r = cli("push", str(p), "--to", "gw1", "--broker", sb.pw_url, "--fleet", "test",
                "--ca", sb.prefix("gw2") + ".ca.crt", "--username", "gw2",
                "--password", sb.pw["gw2"], check=False, timeout=60)
        assert r.returncode == 1 and "operator's credentials" in r.stderr, r.stderr
        # The operator's name with a wrong password: the login is refused.
        r = cli("push", str(p), "--to", "gw1", "--broker", sb.pw_url, "--fleet", "test",
                "--ca", sb.prefix("gw2") + ".ca.crt", "--username", "operator",
                "--password", "guess", check=False, timeout=60)
        assert r.returncode == 1 and "refused the login" in r.stderr, r.stderr
        # No credentials at all on the password listener.
        r = cli("status", "--broker", sb.pw_url, "--fleet", "test",
                "--ca", sb.prefix("gw2") + ".ca.crt", check=False, timeout=60)
        assert r.returncode == 1 and "refused the login" in r.stderr, r.stderr
        # Nothing changed on the node.
        assert g.status()["modules"] == []
        # The operator's password (from the environment) pushes over mqtts.
        env_cli = dict(os.environ, AEGIS_MQTT_PASSWORD=sb.pw["operator"])
        r = subprocess.run([sys.executable, "-m", "node.cli.main", "push", str(p), "--to",
                            "group:lab", "--broker", sb.pw_url, "--fleet", "test",
                            "--ca", sb.prefix("gw2") + ".ca.crt", "--username", "operator"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT, env=env_cli)
        assert r.returncode == 0, r.stderr
        assert [m["version"] for m in g.status()["modules"]] == ["1.0.0"]
    finally:
        g.stop()


def test_wrong_ca_bad_files_and_refused_certificates_are_clear(tmp_path, signer, sb):
    other_ca = sb.prefix("rogue-gw1") + ".ca.crt"
    # The broker's certificate is not from the CA we trust.
    r = cli("status", "--broker", sb.cert_url, "--fleet", "test", "--ca", other_ca,
            "--cert", sb.prefix("operator") + ".crt", "--key", sb.prefix("operator") + ".key",
            check=False)
    assert r.returncode == 1 and "broker's certificate is not trusted" in r.stderr, r.stderr
    # Our certificate is from another fleet's CA (same CN): the broker refuses it.
    r = cli("status", "--broker", sb.cert_url, "--fleet", "test",
            "--cert", sb.prefix("rogue-gw1") + ".crt", "--key", sb.prefix("rogue-gw1") + ".key",
            "--ca", sb.prefix("gw1") + ".ca.crt", check=False)
    assert r.returncode == 1 and "refused our client certificate" in r.stderr, r.stderr
    # No certificate on the certificate listener.
    r = cli("status", "--broker", sb.cert_url, "--fleet", "test",
            "--ca", sb.prefix("gw1") + ".ca.crt", check=False)
    assert r.returncode == 1 and "requires a client certificate" in r.stderr, r.stderr
    # Local files: missing, or a key that is not the certificate's: exit 2.
    r = cli("status", "--broker", sb.cert_url, "--fleet", "test",
            "--cert", str(tmp_path / "nope"), check=False)
    assert r.returncode == 2 and "nope.crt exists" in r.stderr, r.stderr
    r = cli("status", "--broker", sb.cert_url, "--fleet", "test",
            "--cert", sb.prefix("gw1") + ".crt", "--key", sb.prefix("gw2") + ".key", check=False)
    assert r.returncode == 2 and "does not belong to" in r.stderr, r.stderr
    r = cli("status", "--broker", sb.cert_url.replace("mqtts", "mqtt"), "--fleet", "test",
            "--cert", sb.prefix("gw1"), check=False)
    assert r.returncode == 2 and "need an mqtts:// broker URL" in r.stderr, r.stderr


def test_gateway_with_wrong_ca_keeps_serving_and_retrying(tmp_path, signer, sb):
    other_ca = sb.prefix("rogue-gw1") + ".ca.crt"
    g = secure_gw(tmp_path, signer, sb, 'url = "%s"\nca = "%s"\ncert = "%s.crt"\n'
                  'key = "%s.key"\n' % (sb.cert_url, other_ca, sb.prefix("gw1"),
                                        sb.prefix("gw1")), wait_connect=False)
    g2 = secure_gw(tmp_path, signer, sb, 'url = "%s"\nca = "%s.ca.crt"\ncert = "%s"\n'
                   % (sb.cert_url, sb.prefix("gw1"), sb.prefix("rogue-gw1")), node_id="gw2",
                   wait_connect=False)
    g3 = secure_gw(tmp_path, signer, sb, 'url = "%s"\nca = "%s.ca.crt"\nusername = "gw3"\n'
                   'password = "wrong"\n' % (sb.pw_url, sb.prefix("gw1")), node_id="gw3",
                   wait_connect=False)
    try:
        wait_for(lambda: '"mqtt connect failed; retrying"' in g.logs(), what="gw1 log line")
        # Backing off from 0.2 s: three tries take about 1.4 s (a loaded
        # machine may be slower; the deadline is generous).
        wait_for(lambda: g.status()["mqtt"]["errors"].get("tls", 0) >= 3, timeout=40,
                 what="three tries, backing off (%s)" % g.logs())
        st = g.status()["mqtt"]
        assert not st["connected"] and "not trusted" in st["last_error"]
        line = [x for x in g.log_lines() if x.get("msg") == "mqtt connect failed; retrying"][0]
        assert line["kind"] == "tls" and "is ca (--ca) the CA" in line["error"], line
        # One line for a reason that persists, not one per retry.
        assert g.logs().count("certificate is not trusted") == 1
        out = g.cli("status").stdout
        assert "mqtt: %s NOT connected: TLS: the broker's certificate is not trusted" \
            % sb.cert_url in out, out
        # Still serving locally.
        g.cli("install", str(_pkg(tmp_path, signer)))
        assert [m["name"] for m in g.status()["modules"]] == ["counter"]
        # The broker refuses a certificate of another fleet's CA.
        wait_for(lambda: "refused our client certificate" in
                 (g2.status()["mqtt"]["last_error"] or ""), what="gw2 refused")
        # A wrong password: refused login, logged as such.
        wait_for(lambda: '"kind": "auth"' in g3.logs(), what="gw3 refused")
        assert "refused the login" in g3.status()["mqtt"]["last_error"]
    finally:
        g.stop()
        g2.stop()
        g3.stop()
    # A cert that is not there is a clear start-up error of the config.
    r = cli("gateway", "--config", _bad_config(tmp_path, signer, sb), check=False, timeout=30)
    assert r.returncode != 0 and "mqtts cert" in r.stdout + r.stderr, r.stdout + r.stderr


def _bad_config(tmp_path, signer, sb):
    d = tmp_path / "bad"
    d.mkdir()
    p = d / "gateway.toml"
    p.write_text('node_id = "gw9"\nfleet = "test"\nstore_dir = "store"\n'
                 'control_socket = "aegis.sock"\ntrusted_keys = ["%s"]\n[mqtt]\nurl = "%s"\n'
                 'cert = "%s"\nkey = "%s"\n' % (signer.pub, sb.cert_url, d / "no.crt",
                                                d / "no.key"))
    return str(p)


def test_broker_config_cli_and_the_shipped_samples(tmp_path):
    out = tmp_path / "out"
    r = cli("broker-config", "--fleet", "home", "--out", str(out), "--group", "lab=gw-1,gw-2",
            "kitchen=gw-2", "--proxy", "gw-1-proxy=pico-1")
    assert "next, on the broker host" in r.stderr
    acl = (out / "aegis.acl").read_text()
    assert "pattern write aegis/home/ev/%u/#" in acl
    assert "user gw-2\ntopic read aegis/home/group/kitchen/deploy\n" \
           "topic read aegis/home/group/lab/deploy" in acl
    assert "user operator\ntopic readwrite aegis/home/#" in acl
    conf = (out / "aegis.conf").read_text()
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    assert "\nset_tcp_nodelay true\n" in conf     # no 40 ms Nagle stalls (docs/MESH.md)
    # The files shipped for the Raspberry Pi gateway are exactly this output.
    sample = os.path.join(ROOT, "boards", "rpi-gateway", "mosquitto")
    for name in ("aegis.acl", "aegis.conf"):
        with open(os.path.join(sample, name)) as f:
            assert f.read() == (out / name).read_text(), name
    r = cli("broker-config", "--fleet", "home", "--out", str(out), "--group", "lab",
            check=False)
    assert r.returncode == 2 and "GROUP=NODE" in r.stderr
    r = cli("broker-config", "--fleet", "home", "--out", str(out), "--operator", "gw-1",
            "--group", "lab=gw-1", check=False)
    assert r.returncode == 2 and "one name space" in r.stderr
    with pytest.raises(brokerconf.BrokerConfError):
        brokerconf.acl("bad/fleet", ["operator"])
    # Listeners come and go with their ports; the plain one has no TLS lines.
    conf = brokerconf.mosquitto_conf("/e", cert_port=0, password_port=0, plain_port=1883)
    assert "listener 1883\npassword_file /e/passwd\n" in conf
    assert "cafile" not in conf and "require_certificate" not in conf
    with pytest.raises(brokerconf.BrokerConfError):
        brokerconf.mosquitto_conf("/e", cert_port=0, password_port=0)


# A board (real MicroPython, node/board/mqtt_async.py) on the plain password
# listener: same ACL, so it too can publish only as itself.
BOARD = r"""
import sys
sys.path.insert(0, %r)
import asyncio, json
from node.core import mqtt
from node.board.mqtt_async import MQTTLink

async def main():
    port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    link = MQTTLink("127.0.0.1", port, "board", username=user, password=pw,
                    backoff_ms=(100, 1000), tick_ms=100)
    asyncio.create_task(link.run())
    acked = 0
    async for ev in link:
        t = type(ev)
        if t is mqtt.ConnectRefused:
            print(json.dumps({"refused": ev.text}))
            break
        if t is mqtt.Connected:
            link.publish("aegis/test/ev/gw1/sensor/x", b"forged", qos=1)
            link.publish("aegis/test/ev/%%s/sensor/x" %% user, b"own", qos=1)
        elif t is mqtt.Published:
            acked += 1
            if acked == 2:
                print(json.dumps({"acked": acked}))
                break
    await link.stop()

asyncio.run(main())
""" % ROOT


def _board(tmp_path, sb, user, pw):
    script = tmp_path / "board.py"
    script.write_text(BOARD)
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    r = subprocess.run([mp, "-X", "heapsize=192K", str(script), str(sb.plain_port), user, pw],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_board_on_the_plain_password_listener_is_held_to_its_own_topics(tmp_path, sb):
    spy = TlsClient(sb.pw_url, username="operator", password=sb.pw["operator"],
                    ca_file=sb.prefix("gw1") + ".ca.crt", subscribe=["aegis/test/#"])
    try:
        assert '"acked": 2' in _board(tmp_path, sb, "gw2", sb.pw["gw2"])
        wait_for(lambda: "aegis/test/ev/gw2/sensor/x" in spy.topics(), what="board's own")
        assert "aegis/test/ev/gw1/sensor/x" not in spy.topics()
        out = _board(tmp_path, sb, "gw2", "wrong")
        assert '"refused": "not authorized"' in out, out
    finally:
        spy.close()


def test_gateway_whose_certificate_names_another_node_is_refused_and_warned(tmp_path, signer,
                                                                           sb):
    # node_id gw2 with gw1's certificate: the broker knows it as gw1.
    g = secure_gw(tmp_path, signer, sb, 'url = "%s"\ncert = "%s"\n'
                  % (sb.cert_url, sb.prefix("gw1")), node_id="gw2", wait_connect=False)
    try:
        line = wait_for(lambda: [x for x in g.log_lines()
                                 if x.get("msg", "").startswith("mqtt certificate names")],
                        what="identity warning")[0]
        assert line["cert_cn"] == "gw1" and line["node_id"] == "gw2"
        # Whatever it tries under aegis/test/node/gw2/ is refused and logged.
        wait_for(lambda: g.status()["mqtt"]["errors"].get("denied"), what="a refusal")
        line = [x for x in g.log_lines() if x.get("msg") == "mqtt denied a publish"][0]
        assert "Not authorized" in line["error"]
    finally:
        g.stop()
