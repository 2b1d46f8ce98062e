# What operator tools (aegis status/push, the gateway) subscribe to and read
# back from a fleet: the wildcard filters over fleet.py's topics and the
# checked decoder of a node's retained status.  Split from fleet.py so a
# board, which only writes its status, does not load it (docs/BOARDS.md "Heap budget").
from node.core import cbor
from node.core.fleet import EnvelopeError, check_node_id

MAX_STATUS = 16384


def reply_filter(fleet):
    """Every node's deploy/reply topic (an operator pushing to several)."""
    check_node_id(fleet, "fleet")
    return "aegis/%s/node/+/deploy/reply" % fleet


def status_filter(fleet):
    check_node_id(fleet, "fleet")
    return "aegis/%s/node/+/status" % fleet


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
