"""Gateways with a [quic] section, a fleet CA and certificates, for tests."""
import json
import os

from gateway_proc import Gateway, wait_for
from node import ca


class Fleet:
    """A fleet CA under tmp/ca and certificates issued from it."""

    def __init__(self, tmp, name="test"):
        self.tmp = tmp
        self.dir = str(tmp / ("ca-" + name))
        ca.init(self.dir, name)

    def issue(self, cn):
        prefix = str(self.tmp / ("cert-%s-%s" % (os.path.basename(self.dir), cn)))
        ca.issue(cn, self.dir, prefix, dns=["localhost"], ips=["127.0.0.1", "::1"])
        return prefix


def quic_gw(tmp, signer, fleet, node_id, peers=(), listen=True, extra="", start=True, port=0,
            quic_extra=""):
    d = tmp / node_id
    d.mkdir(exist_ok=True)
    prefix = fleet.issue(node_id)
    q = '[quic]\ncert = "%s.crt"\nkey = "%s.key"\nca = "%s.ca.crt"\npeers = %s\n' % (
        prefix, prefix, prefix, json.dumps(list(peers)))
    if listen:
        q += 'listen = "127.0.0.1:%d"\n' % port
    q += quic_extra
    g = Gateway(d, [signer.pub], node_id=node_id, extra=extra + "\n" + q)
    return g.start() if start else g


def quic_port(g):
    """The UDP port a gateway bound (listen = "127.0.0.1:0" picks a free one)."""
    line = wait_for(lambda: [x for x in g.log_lines() if x["msg"] == "quic started"],
                    what="quic started")[-1]
    return int(line["listen"].rsplit(":", 1)[1])


def addr(g):
    return "127.0.0.1:%d" % quic_port(g)


def pin_port(g):
    """Rewrite the config with the port it bound, so a restart reuses it."""
    port = quic_port(g)
    with open(g.config) as f:
        text = f.read()
    with open(g.config, "w") as f:
        f.write(text.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:%d"' % port))
    return "127.0.0.1:%d" % port


def emit_many(g, topic, values):
    """Emit events through the control socket, one connection for all."""
    from node.control import Client
    from node.core import cbor
    c = Client(g.sock)
    try:
        for v in values:
            r = c.request("emit", topic=topic, data=cbor.dumps(v))
            assert r.get("ok"), r
    finally:
        c.close()


def quic_stats(g):
    return g.status()["quic"]


def peer_states(g):
    return {p["peer"]: p["state"] for p in quic_stats(g)["peers"]}


def counts_from(g, src):
    """Values of the count/total events `src` raised, as g's ring holds them."""
    out = g.cli("events", "--json", "--topic", "count/#").stdout.splitlines()
    return [json.loads(x)["data"] for x in out if json.loads(x)["src"] == src]
