# Fleet topics and the retained node status: the MQTT names every node and
# operator tool agree on (docs/MESH.md), kept in the core so boards use the
# same names and payload checks as gateways.
#
#   aegis/<fleet>/ev/<node>/<topic>        events (envelope.py)
#   aegis/<fleet>/node/<node>/status       retained CBOR status, last will
#   aegis/<fleet>/node/<node>/deploy       transfer messages to the node
#   aegis/<fleet>/node/<node>/deploy/reply transfer messages from the node
#   aegis/<fleet>/group/<group>/deploy     transfer messages to a group
from node.core import cbor
from node.core.ids import EnvelopeError, check_node_id

MAX_STATUS = 16384


def _base(fleet, node_id):
    check_node_id(fleet, "fleet")
    check_node_id(node_id)
    return "aegis/%s/node/%s/" % (fleet, node_id)


def status_topic(fleet, node_id):
    return _base(fleet, node_id) + "status"


def deploy_topic(fleet, node_id):
    return _base(fleet, node_id) + "deploy"


def reply_topic(fleet, node_id):
    return _base(fleet, node_id) + "deploy/reply"


def group_topic(fleet, group):
    check_node_id(fleet, "fleet")
    check_node_id(group, "group")
    return "aegis/%s/group/%s/deploy" % (fleet, group)


def reply_filter(fleet):
    """Every node's deploy/reply topic (an operator pushing to several)."""
    check_node_id(fleet, "fleet")
    return "aegis/%s/node/+/deploy/reply" % fleet


def status_filter(fleet):
    check_node_id(fleet, "fleet")
    return "aegis/%s/node/+/status" % fleet


def encode_status(node_id, online, groups=(), modules=(), max_chunk=0, counts=None, ts=0,
                  extra=None):
    """Retained status.  `modules` is [{name, version, state}]; `counts` a
    flat map of ints (outbox drops, dedup, bad messages) for operators;
    `extra` optional keys (a board adds mode, board and ports)."""
    s = {"node": node_id, "online": bool(online), "groups": list(groups),
         "modules": list(modules), "max_chunk": max_chunk, "counts": counts or {}, "ts": ts}
    if extra:
        s.update(extra)
    return cbor.dumps(s)


def decode_status(b):
    """Status map from bytes (missing optional keys filled in), or
    EnvelopeError: statuses come from any client on the broker."""
    if len(b) > MAX_STATUS:
        raise EnvelopeError("status is %d bytes, limit %d" % (len(b), MAX_STATUS))
    try:
        s = cbor.loads(bytes(b))
    except cbor.CBORError as e:
        raise EnvelopeError("status is not CBOR: %s" % e)
    if type(s) is not dict:
        raise EnvelopeError("status must be a CBOR map")
    check_node_id(s.get("node"), "status node")
    if type(s.get("online")) is not bool:
        raise EnvelopeError("status 'online' must be a bool")
    for k, typ, dflt in (("groups", list, []), ("modules", list, []), ("max_chunk", int, 0),
                         ("counts", dict, {}), ("ts", int, 0)):
        v = s.get(k, dflt)
        if type(v) is not typ:
            raise EnvelopeError("status %r must be %s" % (k, typ.__name__))
        s[k] = v
    for m in s["modules"]:
        if type(m) is not dict or type(m.get("name")) is not str \
                or type(m.get("version")) is not str:
            raise EnvelopeError("status modules must be maps with name and version")
    return s
