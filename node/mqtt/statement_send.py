"""`aegis push STATEMENT --to ...`: send a signed rollback or removal
statement (`aegis rollback --out`, `aegis remove --key --out`) to nodes
over MQTT and wait for each node's answer.

A statement is one message on the node's deploy topic; the node answers on
.../deploy/reply with {"t": "result", "id": hex(sha256(statement))[:32],
"ok", "state" | "error"} (docs/ROLLBACK.md).  Targets as for a package push
(node/mqtt/push.py): a node id, or every online member of a group.  The
replies subscription is made in the same request as the statuses, so it is
active before the statement goes out.
"""
import hashlib

from node.core import cbor, fleet as F, fleetwatch as FW, rollback as RB
from node.mqtt.operator import Session, StatusWatch
from node.mqtt.push import PushError, targets_for


def send(url, fleet, data, to, timeout_s=30.0, tls=None):
    """-> (op, {node: (ok, detail)}); a node that did not answer in time
    is (False, "no answer ...")."""
    op = RB.peek_op(data)
    if op is None:
        raise PushError("not a signed statement (aegis rollback --out / aegis remove --key)")
    tid = hashlib.sha256(bytes(data)).hexdigest()[:32]
    watch = StatusWatch(fleet)
    replies = {}        # reply topic -> node
    results = {}

    def on_message(topic, payload):
        node = replies.get(topic)
        if node is None:
            watch.on_message(topic, payload)
            return
        try:
            m = cbor.loads(payload)
        except ValueError:
            return
        if type(m) is dict and m.get("id") == tid and node not in results:
            results[node] = (bool(m.get("ok")), str(m.get("state") if m.get("ok")
                                                    else m.get("error")))

    sess = Session(url, on_message, lambda: watch.subscribe(sess.link, [FW.reply_filter(fleet)]),
                   **(tls or {})).start()
    try:
        one = None if to.startswith("group:") else to
        watch.wait(sess, url, 5.0, until=one and (lambda: one in watch.nodes))
        nodes = targets_for(to, watch.nodes, fleet)
        replies.update((F.reply_topic(fleet, n), n) for n in nodes)
        for n in nodes:
            sess.link.publish(F.deploy_topic(fleet, n), bytes(data), qos=1)
        sess.wait(lambda: len(results) == len(nodes), timeout_s)
    finally:
        sess.stop()
    for n in nodes:
        results.setdefault(n, (False, "no answer within %.0fs" % timeout_s))
    return op, results
