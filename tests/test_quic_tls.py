"""Session resumption over real aioquic against a real gateway process, and
the [quic] config checks."""
import asyncio

import pytest

from gateway_proc import wait_for
from node.core import transfer as T
from node.core.transfer_send import Sender
from node.gateway.config import Config, ConfigError
from node.quic import driver
from node.quic.tls import TLSFiles
from quic_proc import Fleet, addr, quic_gw


class Replies:
    def __init__(self):
        self.msgs = []

    def on_frame(self, payload):
        self.msgs.append(T.decode(payload))

    def on_close(self, why):
        pass


async def _sessions(port, files, pkg):
    got = []
    first = await driver.connect("127.0.0.1", port, files, on_ticket=got.append)
    assert first.peer == "gw1" and not first.resumed
    await first.ping()
    await driver.close_link(first)
    assert got, "the gateway issued no session ticket"
    ticket = got[-1]
    # Resumed: no certificates exchanged, identities carried by the ticket.
    again = await driver.connect("127.0.0.1", port, files, ticket=ticket, on_ticket=got.append)
    assert again.resumed and again.peer == "gw1"
    # Data on a resumed link is served (and attributed to the ticket's node).
    r = Replies()
    s = again.open_stream("push", r)
    sender = Sender(pkg, chunk=4096, name="counter", version="1.0.0")
    for m in sender.messages_to_send(0):
        s.send(m)
    for _ in range(200):
        if r.msgs:
            break
        await asyncio.sleep(0.02)
    assert r.msgs and r.msgs[0]["t"] == "want", r.msgs
    await driver.close_link(again)
    # Tickets are single use: the same one again gets a full handshake.
    third = await driver.connect("127.0.0.1", port, files, ticket=ticket)
    assert not third.resumed and third.peer == "gw1"
    await third.ping()
    await driver.close_link(third)


def test_session_resumption(tmp_path, signer):
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1")
    try:
        port = int(addr(g).rsplit(":", 1)[1])
        files = TLSFiles.from_prefix(fleet.issue("ops"))
        asyncio.run(_sessions(port, files, signer.example("counter")))
        starts = wait_for(lambda: [x for x in g.log_lines() if x["msg"] == "transfer started"],
                          what="transfer started")
        assert starts[0]["peer"] == "ops"
    finally:
        g.stop()


BASE = {"node_id": "gw1", "fleet": "f", "store_dir": "s", "control_socket": "c.sock",
        "trusted_keys": ["k.pub"]}


@pytest.mark.parametrize("quic, error", [
    ({"listen": "0.0.0.0:4433"}, "cert must be a file path"),
    ({"listen": "nope", "cert": "a", "key": "b", "ca": "c"}, "host:port"),
    ({"cert": "a", "key": "b", "ca": "c"}, "give listen, peers, or both"),
    ({"peers": ["h:1", "h:1"], "cert": "a", "key": "b", "ca": "c"}, "twice"),
    ({"peers": ["h:1"], "cert": "a", "key": "b", "ca": "c", "colour": 1}, "unknown key"),
    ({"peers": ["h:1"], "cert": "a", "key": "b", "ca": "c", "window": 0}, "window"),
    ({"peers": ["h:1"], "cert": "a", "key": "b", "ca": "c", "accept": ["a/#/b"]}, "accept"),
])
def test_quic_config_errors(quic, error):
    with pytest.raises(ConfigError) as e:
        Config(dict(BASE, quic=quic))
    assert error in str(e.value)


def test_quic_config_defaults():
    c = Config(dict(BASE, quic={"listen": "[::1]:4433", "peers": ["10.0.0.2:4433"],
                                "cert": "/x/gw1.crt", "key": "/x/gw1.key", "ca": "/x/ca.crt"}))
    q = c.quic
    assert q.listen == ("::1", 4433) and q.peers == [("10.0.0.2", 4433)]
    assert (q.window, q.outbox_max, q.idle_timeout, q.forward) == (128, 10000, 20, None)


def test_gateway_with_unusable_quic_files_says_so(tmp_path, signer):
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1", start=False)
    with open(g.config) as f:
        text = f.read()
    with open(g.config, "w") as f:
        f.write(text.replace(".key\"", ".missing\"", 1))
    from gateway_proc import cli
    r = cli("gateway", "--config", g.config, check=False, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "quic cannot start" in r.stderr and "cannot load TLS files" in r.stderr, r.stderr


def test_gateway_refuses_a_certificate_for_another_node_id(tmp_path, signer):
    fleet = Fleet(tmp_path)
    g = quic_gw(tmp_path, signer, fleet, "gw1", start=False)
    other = fleet.issue("gw2")
    with open(g.config) as f:
        text = f.read()
    import re
    text = re.sub(r'cert = ".*?"', 'cert = "%s.crt"' % other, text)
    text = re.sub(r'key = ".*?"', 'key = "%s.key"' % other, text)
    with open(g.config, "w") as f:
        f.write(text)
    from gateway_proc import cli
    r = cli("gateway", "--config", g.config, check=False, timeout=30)
    assert r.returncode == 2 and "is for 'gw2', not this node's id 'gw1'" in r.stderr, r.stderr
