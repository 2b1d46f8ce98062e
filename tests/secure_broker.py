"""A real Mosquitto configured as docs/SECURITY.md says: the files come
from `aegis broker-config` (node/mqtt/brokerconf.py), the certificates
from `aegis ca` (node/ca.py), the password file from mosquitto_passwd.

    b = SecureBroker(tmp_path / "sb").start()
    b.cert_url   mqtts://127.0.0.1:P  client certificates, CN = user name
    b.pw_url     mqtts://127.0.0.1:Q  user name + password
    b.prefix(n)  PREFIX of `aegis ca issue n` (PREFIX.crt/.key/.ca.crt)
    b.plain_port password listener without TLS (boards, `--plain-port`)
    b.pw[n]      password of n on the password listeners
"""
import os
import subprocess

import paho.mqtt.client as mqtt

from broker import Broker, free_port
from gateway_proc import wait_for
from node import ca
from node.mqtt import brokerconf, tls
from node.mqtt.link import parse_url

FLEET = "test"
CERTS = ("gw1", "gw2", "operator")         # CN = node id / operator name
PASSWORDS = {"operator": "op-secret", "gw2": "gw2-secret", "gw3": "gw3-secret"}


class SecureBroker(Broker):
    def __init__(self, dir, groups=None, proxies=None, certs=()):
        self.proxies = proxies or {}        # proxy host -> [board ids] (ACL)
        self.certs = tuple(certs)           # extra names to issue certificates for
        self.root = str(dir)
        self.pw_port = free_port()
        self.plain_port = free_port()
        self.groups = groups or {}
        super().__init__(os.path.join(self.root, "mosquitto"))
        self.cert_url = "mqtts://127.0.0.1:%d" % self.port
        self.pw_url = "mqtts://127.0.0.1:%d" % self.pw_port
        self.url = self.cert_url
        self.pw = dict(PASSWORDS)

    def prefix(self, name):
        return os.path.join(self.root, "certs", name)

    def write_config(self, extra=""):
        etc = os.path.join(self.root, "etc")
        cadir = os.path.join(self.root, "ca")
        ca.init(cadir, FLEET)
        ca.issue("broker", cadir, os.path.join(etc, "broker"), ips=["127.0.0.1"])
        for n in CERTS + self.certs:
            ca.issue(n, cadir, self.prefix(n))
        # Same names, another fleet's CA: must be refused both ways.
        other = os.path.join(self.root, "other-ca")
        ca.init(other, "other")
        ca.issue("gw1", other, self.prefix("rogue-gw1"))
        gen = os.path.join(self.root, "gen")
        brokerconf.write(gen, FLEET, ["operator"], self.groups, etc=etc,
                         cert_port=self.port, password_port=self.pw_port, bind="127.0.0.1",
                         plain_port=self.plain_port, proxies=self.proxies)
        os.replace(os.path.join(gen, "aegis.acl"), os.path.join(etc, "aegis.acl"))
        pwfile = os.path.join(etc, "passwd")
        for i, (user, pw) in enumerate(sorted(PASSWORDS.items())):
            subprocess.run(["mosquitto_passwd"] + (["-c"] if i == 0 else []) +
                           ["-b", pwfile, user, pw], check=True, capture_output=True)
        with open(os.path.join(gen, "aegis.conf")) as f:
            conf = f.read()
        with open(self.conf, "w") as f:
            f.write(conf + "log_dest stderr\nlog_type error\nlog_type warning\n"
                    "log_type notice\n%s%s\n"
                    % ("user root\n" if os.getuid() == 0 else "", extra))


class TlsClient:
    """A plain paho client over TLS recording what it receives, and the
    PUBACK reason of each publish (MQTT 5, so ACL refusals are visible)."""

    def __init__(self, url, cert=None, username=None, password=None, client_id="",
                 subscribe=(), ca_file=None, connect=True):
        secure, host, port = parse_url(url)
        assert secure
        cafile, certf, keyf = tls.resolve(ca_file, cert, None)
        self.msgs, self.acks, self.subscribed = [], {}, False
        self.rc = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        self.c.tls_set_context(tls.context(cafile, certf, keyf))
        if username:
            self.c.username_pw_set(username, password)
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload))
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, str(rc))
        self.c.on_subscribe = lambda *a: setattr(self, "subscribed", True)

        def on_connect(c, u, f, rc, p):
            self.rc = str(rc)
            if subscribe and not rc.is_failure:
                c.subscribe([(x, 1) for x in subscribe])
        self.c.on_connect = on_connect
        self.c.connect_async(host, port)
        self.c.loop_start()
        wait_for(lambda: self.rc is not None, 15.0, "CONNACK")
        if subscribe and self.rc == "Success":
            wait_for(lambda: self.subscribed, 15.0, "SUBACK")

    def publish(self, topic, payload, retain=False):
        """The broker's PUBACK reason ('Success' or 'Not authorized')."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        return wait_for(lambda: self.acks.get(info.mid), 15.0, "PUBACK of " + topic)

    def topics(self):
        return [t for t, _ in list(self.msgs)]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
