"""Mosquitto configuration for a fleet: `aegis broker-config`.

Writes a mosquitto.conf fragment (two TLS listeners: client certificates
from the fleet CA, and user name + password) and an ACL file.  On both
listeners a client's MQTT user name is its node id -- the certificate's CN
(use_identity_as_username) or its password-file entry -- and the ACL's
%u patterns give every node exactly its own topics (docs/SECURITY.md):

    publish   aegis/<fleet>/ev/<id>/#, .../node/<id>/status, .../node/<id>/deploy/reply
    subscribe aegis/<fleet>/ev/#, .../node/<id>/deploy, group deploy topics listed here

Boards in proxy mode (node/board/proxy.py) also get their own proxy topics:
publish .../node/<id>/proxy/pkg and proxy/up, read proxy/pkg/reply and
proxy/down.  A proxy host (`aegis proxy`, node/proxy/host.py), listed with
--proxy HOST=BOARD,..., gets the other side of exactly those boards' proxy
topics and nothing else of theirs.

Operators get the whole fleet tree.  %c (client id) is never used: the
client chooses it, the broker does not check it.
"""
from node.core.envelope import EnvelopeError, check_node_id


class BrokerConfError(ValueError):
    pass


def _id(v, what):
    try:
        check_node_id(v, what)
    except EnvelopeError as e:
        raise BrokerConfError(str(e))


# The proxy topics under aegis/<fleet>/node/<board>/: (suffix, board's
# access, proxy host's access).  The board publishes its packages and its
# events/call results; the host answers the handover and sends calls/emits.
PROXY_TOPICS = (("proxy/pkg", "write", "read"), ("proxy/pkg/reply", "read", "write"),
                ("proxy/up", "write", "read"), ("proxy/down", "read", "write"))


def acl(fleet, operators, groups=None, proxies=None):
    """ACL text.  `groups` maps group name -> [node ids]: mosquitto's ACL
    has no group membership, so each member gets its own line.  `proxies`
    maps a proxy host's user name -> [board ids it serves]."""
    _id(fleet, "fleet")
    if not operators:
        raise BrokerConfError("name at least one operator (the only user that may push)")
    groups = groups or {}
    members = {}
    for g, nodes in sorted(groups.items()):
        _id(g, "group")
        for n in nodes:
            _id(n, "node id")
            members.setdefault(n, []).append(g)
    served = {}
    for h, boards in sorted((proxies or {}).items()):
        _id(h, "proxy host")
        for bd in boards:
            _id(bd, "board id")
            if bd == h:
                raise BrokerConfError("proxy host %r cannot serve itself" % h)
            if bd in served and served[bd] != h:
                raise BrokerConfError("board %r has two proxy hosts (%s, %s); exactly one host "
                                      "runs a board's modules" % (bd, served[bd], h))
            served[bd] = h
    for o in operators:
        _id(o, "operator name")
        if o in members or o in (proxies or {}):
            raise BrokerConfError("%r is named as operator and as group member or proxy host; "
                                  "node ids and operator names share one name space" % o)
    b = "aegis/%s/" % fleet
    out = ["# Mosquitto ACL for aegis fleet %r, written by `aegis broker-config`." % fleet,
           "# A client's user name is its node id (certificate CN or password-file",
           "# name); %u below is that name.  Anything not granted is denied.",
           "",
           "# Every node: publish only its own events, status and deploy replies;",
           "# read the fleet's events and only its own deploy topic.",
           "pattern write %sev/%%u/#" % b,
           "pattern read %sev/#" % b,
           "pattern write %snode/%%u/status" % b,
           "pattern read %snode/%%u/deploy" % b,
           "pattern write %snode/%%u/deploy/reply" % b,
           "",
           "# Every node that is a board in proxy mode: its own proxy topics only.",
           ] + ["pattern %s %snode/%%u/%s" % (mine, b, t) for t, mine, _ in PROXY_TOPICS]
    users = {}      # one `user` block per name: group reads, then proxy lines
    for n in sorted(members):
        users.setdefault(n, ["# %s: member of %s" % (n, ", ".join(members[n]))])
        users[n] += ["topic read %sgroup/%s/deploy" % (b, g) for g in members[n]]
    for h, boards in sorted((proxies or {}).items()):
        users.setdefault(h, []).append("# %s: proxy host of %s" % (h, ", ".join(boards)))
        for bd in boards:
            users[h] += ["topic %s %snode/%s/%s" % (host, b, bd, t) for t, _, host in PROXY_TOPICS]
    for n in sorted(users):
        out += [""] + users[n][:1] + ["user %s" % n] + users[n][1:]
    for o in operators:
        out += ["", "# operator: push, fleet status, everything in the fleet's tree",
                "user %s" % o, "topic readwrite %s#" % b]
    return "\n".join(out) + "\n"


def mosquitto_conf(etc, cert_port=8883, password_port=8884, bind=None, plain_port=0):
    """mosquitto.conf text; `etc` is the folder that holds, on the broker
    host, what `aegis ca issue broker --out ETC/broker` writes (broker.crt,
    broker.key, broker.ca.crt = the fleet CA), aegis.acl and passwd.
    A port of 0 leaves that listener out; `plain_port` (off by default) is
    a password listener without TLS, for boards until they speak TLS."""
    if not cert_port and not password_port and not plain_port:
        raise BrokerConfError("at least one listener (cert or password port)")
    p = etc.rstrip("/") + "/"
    tls = ["cafile %sbroker.ca.crt" % p, "certfile %sbroker.crt" % p, "keyfile %sbroker.key" % p]
    where = (" " + bind) if bind else ""
    out = ["# Mosquitto 2.x for an aegis fleet, written by `aegis broker-config`.",
           "# Include from /etc/mosquitto/mosquitto.conf or pass with -c.",
           "per_listener_settings true",
           "# No Nagle on the broker's sockets: pushes, PUBACKs and events are small",
           "# request/response packets, and with Nagle each waits for the client's",
           "# delayed ACK of the one before, up to 40 ms (docs/MESH.md).",
           "set_tcp_nodelay true", ""]
    if cert_port:
        out += ["# Nodes and operators with a certificate from the fleet CA",
                "# (`aegis ca issue NAME`): the CN is the user name.",
                "listener %d%s" % (cert_port, where)] + tls + [
                "require_certificate true",
                "use_identity_as_username true",
                "# one connection per identity: a client cannot take over another's",
                "# session by choosing its client id",
                "use_username_as_clientid true",
                "allow_anonymous false",
                "acl_file %saegis.acl" % p, ""]
    if password_port:
        out += ["# Clients without a certificate: server-side TLS plus a password",
                "# (mosquitto_passwd %spasswd NODE_ID).  The user name is the node id." % p,
                "listener %d%s" % (password_port, where)] + tls + [
                "password_file %spasswd" % p,
                "use_username_as_clientid true",
                "allow_anonymous false",
                "acl_file %saegis.acl" % p, ""]
    if plain_port:
        out += ["# Boards without TLS: password in clear text, same ACL.  Only on a",
                "# network you trust; prefer the TLS listeners.",
                "listener %d%s" % (plain_port, where),
                "password_file %spasswd" % p,
                "use_username_as_clientid true",
                "allow_anonymous false",
                "acl_file %saegis.acl" % p, ""]
    return "\n".join(out)


def parse_groups(specs, what="--group", left="GROUP", right="NODE"):
    """["lab=gw1,gw2", ...] -> {"lab": ["gw1", "gw2"]}."""
    groups = {}
    for s in specs or ():
        g, sep, nodes = s.partition("=")
        if not sep or not nodes:
            raise BrokerConfError("%s %r: write %s=%s[,%s...]" % (what, s, left, right, right))
        groups.setdefault(g, []).extend(n for n in nodes.split(",") if n)
    return groups


def parse_proxies(specs):
    """["gw-1-proxy=pico-1,pico-2"] -> {"gw-1-proxy": ["pico-1", "pico-2"]}."""
    return parse_groups(specs, "--proxy", "HOST", "BOARD")


def write(out_dir, fleet, operators, groups=None, etc="/etc/mosquitto/aegis",
          cert_port=8883, password_port=8884, bind=None, plain_port=0, proxies=None):
    """Write out_dir/aegis.conf and out_dir/aegis.acl; returns both paths."""
    import os
    files = {"aegis.acl": acl(fleet, operators, groups, proxies),
             "aegis.conf": mosquitto_conf(etc, cert_port, password_port, bind, plain_port)}
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, text in sorted(files.items(), reverse=True):
        p = os.path.join(out_dir, name)
        with open(p + ".tmp", "w") as f:
            f.write(text)
        os.replace(p + ".tmp", p)
        paths.append(p)
    return paths


NEXT_STEPS = """next, on the broker host (docs/SECURITY.md):
  aegis ca issue broker --ca CA_DIR --out {etc}/broker --dns BROKER_NAME --ip BROKER_ADDR
  cp {out}/aegis.acl {etc}/; cp {out}/aegis.conf /etc/mosquitto/conf.d/
  mosquitto_passwd -c {etc}/passwd OPERATOR     # then without -c: each password node
  chown mosquitto {etc}/broker.key {etc}/passwd; systemctl restart mosquitto"""
