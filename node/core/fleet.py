# Fleet topics, node ids and the retained node status: the MQTT names every
# node and operator tool agree on (docs/MESH.md), kept in the core so boards
# use the same names and checks as gateways.  Everything here is loaded by a
# board at boot (docs/BOARDS.md "Heap budget"); what only operators read back
# (status filters and the status decoder) is in fleetwatch.py.
#
#   aegis/<fleet>/ev/<node>/<topic>        events (envelope.py)
#   aegis/<fleet>/node/<node>/status       retained CBOR status, last will
#   aegis/<fleet>/node/<node>/deploy       transfer messages to the node
#   aegis/<fleet>/node/<node>/deploy/reply transfer messages from the node
#   aegis/<fleet>/group/<group>/deploy     transfer messages to a group
#
# EnvelopeError is the error for bad mesh input of any kind; envelope.py
# re-exports it with the id checks.
from node.core import cbor


class EnvelopeError(ValueError):
    pass


def _check_chars(what, s, text, n):
    # s: 1..n characters, each one of `text` (the error names it `what`).
    if type(s) is not str:
        raise EnvelopeError("%s must be text, got %s" % (what, type(s).__name__))
    if not 1 <= len(s) <= n:
        raise EnvelopeError("%s must be 1..%d characters, got %d"
                            % (what, n, len(s)))
    for c in s:
        if c not in text:
            raise EnvelopeError("%s %r has character %r; allowed: A-Z a-z 0-9 _ . -"
                                % (what, s, c))


def check_node_id(node_id, what="node id"):
    """Node ids (and fleet names, module names): 1..64 chars of
    [A-Za-z0-9_.-], not "." or ".."."""
    _check_chars(what, node_id,
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-", 64)
    if len(node_id) < 3 and not node_id.strip("."):
        # "." and "..": they become MQTT levels and sometimes file names;
        # keep them inert.
        raise EnvelopeError("%s must not be '.' or '..'" % what)


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


def encode_status(node_id, online, groups=(), modules=(), max_chunk=0, counts=None, ts=0,
                  extra=None):
    """Retained status.  `modules` is [{name, version, state}]; `counts` a
    flat map of ints (outbox drops, dedup, bad messages) for operators;
    `extra` optional keys (a board adds mode, board and ports).
    fleetwatch.decode_status reads it back."""
    s = {"node": node_id, "online": bool(online), "groups": list(groups),
         "modules": list(modules), "max_chunk": max_chunk, "counts": counts or {}, "ts": ts}
    if extra:
        s.update(extra)
    return cbor.dumps(s)
