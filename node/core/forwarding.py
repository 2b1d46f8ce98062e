# The envelope parts only a gateway's forwarders use (node/mqtt/forward.py,
# node/quic/mesh.py), split from envelope.py so a board running modules does
# not load them (docs/BOARDS.md "Heap budget"): the MQTT topic an event goes out on,
# which events are this node's own to send, and Dedup windows that survive
# a restart.
from node.core import cbor
from node.core.envelope import NOT_MODULES, Dedup, EnvelopeError, check_node_id, check_topic

# An event topic's limit (bus.py, envelope.check_topic), twice a node id's
# (fleet.py) and the fixed levels: ev_topic never returns more.
_MAX_EV_TOPIC = 255 + 2 * 64 + 16


def is_own_module_event(ev, node_id):
    """True for an event one of node_id's modules emitted, which the MQTT
    forwarder and the QUIC mesh send out (not system `$` topics)."""
    return ev.src == node_id and ev.mod not in NOT_MODULES and not ev.topic.startswith("$")


def ev_topic(fleet, node_id, topic):
    """"aegis/<fleet>/ev/<node_id>/<topic>" for an event `topic` of `node_id`
    (envelope.parse_ev_topic reads it back)."""
    check_node_id(fleet, "fleet")
    check_node_id(node_id)
    check_topic(topic)
    t = "aegis/%s/ev/%s/%s" % (fleet, node_id, topic)
    # The MQTT limit is 64 KiB; ours keeps topics small for boards.
    if len(t.encode()) > _MAX_EV_TOPIC:
        raise EnvelopeError("MQTT topic too long")
    return t


class SavedDedup(Dedup):
    """A Dedup whose windows can be saved and restored, so a restarted
    gateway does not deliver again what it delivered before."""

    def dumps(self):
        """The windows as CBOR ({src: [top, bitmap]}), for save() to persist."""
        return cbor.dumps({k: [st[0], bytes(st[1])] for k, st in self._src.items()})

    def loads(self, raw):
        """Restore windows saved by dumps().  Entries that do not fit this
        window size are skipped (that source starts fresh); returns how
        many sources were restored.  Raises EnvelopeError when unreadable."""
        try:
            d = cbor.loads(raw)
        except cbor.CBORError as e:
            raise EnvelopeError("dedup state unreadable: %s" % e)
        if type(d) is not dict:
            raise EnvelopeError("dedup state is not a map")
        n = 0
        for k, v in d.items():
            if n >= self.max_sources:
                break
            if (type(k) is not str or type(v) is not list or len(v) != 2
                    or type(v[0]) is not int or v[0] < 0 or type(v[1]) is not bytes
                    or len(v[1]) != self.window // 8):
                continue
            self._src[k] = [v[0], bytearray(v[1]), 0]
            n += 1
        return n
