"""The gateway config's optional [quic] section (checked, clear errors).

    [quic]
    listen = "0.0.0.0:4433"          # optional: serve pushes and peers here
    cert = "gw-1.crt"                # this node's certificate (CN = node_id)
    key = "gw-1.key"
    ca = "gw-1.ca.crt"               # the fleet CA: every client must chain to it
    peers = ["10.0.0.2:4433"]        # gateways to link to (host:port)
    forward = ["#"]                  # own module events sent to peers (default all)
    accept = ["#"]                   # mesh events taken in (default all)
    outbox_max = 10000               # per peer; the oldest are dropped beyond
    outbox_bytes = 4194304
    window = 128                     # events in flight per peer link
    max_package = 16777216           # largest package a push may bring
    idle_timeout = 20                # seconds without packets before a link is dead
"""
from node.gateway.config import ConfigError, check_id, check_table, int_in, topic_filters

KNOWN = {"listen", "cert", "key", "ca", "peers", "forward", "accept", "outbox_max",
         "outbox_bytes", "window", "max_package", "idle_timeout"}


def parse_hostport(s, what):
    if not isinstance(s, str):
        raise ConfigError("config [quic]: %s must be \"host:port\"" % what)
    host, sep, port = s.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError("config [quic]: %s %r must be \"host:port\"" % (what, s))
    return host, int(port)


class QuicConfig:
    def __init__(self, q, rel, node_id):
        check_table(q, "quic", KNOWN)
        self.listen = parse_hostport(q["listen"], "listen") if "listen" in q else None
        for k in ("cert", "key", "ca"):
            v = q.get(k)
            if not isinstance(v, str) or not v:
                raise ConfigError("config [quic]: %s must be a file path (mutual TLS is "
                                  "required; `aegis ca issue %s` makes them)" % (k, node_id))
            setattr(self, k, rel(v))
        peers = q.get("peers", [])
        if not isinstance(peers, list):
            raise ConfigError("config [quic]: peers must be a list of \"host:port\"")
        self.peers = [parse_hostport(p, "peer") for p in peers]
        if len(set(self.peers)) != len(self.peers):
            raise ConfigError("config [quic]: peers lists an address twice")
        if self.listen is None and not self.peers:
            raise ConfigError("config [quic]: give listen, peers, or both")
        self.forward = topic_filters(q, "quic", "forward")
        self.accept = topic_filters(q, "quic", "accept")

        def num(k, dflt, lo, hi):
            return int_in(q, "quic", k, dflt, lo, hi)
        self.outbox_max = num("outbox_max", 10000, 1, 10 ** 7)
        self.outbox_bytes = num("outbox_bytes", 4 << 20, 1024, 1 << 30)
        self.window = num("window", 128, 1, 4096)
        self.max_package = num("max_package", 16 << 20, 1024, 1 << 30)
        self.idle_timeout = num("idle_timeout", 20, 2, 3600)
        check_id(node_id, "node_id")
