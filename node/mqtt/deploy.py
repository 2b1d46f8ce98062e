"""Node side of module push over MQTT: transfer.Receiver on the gateway's
DirStore, install through the host's A/B lifecycle, reply on our own
deploy/reply topic.  Runs on the gateway's event loop thread."""
import hashlib

from node.core import cbor, rollback as RB
from node.core.fleet import reply_topic
from node.host import InstallError
from node.push_install import PushInstaller, now_ms


class Deployer(PushInstaller):
    def __init__(self, gw, link, mcfg):
        PushInstaller.__init__(self, gw, mcfg.max_package)
        self.link = link
        self.reply = reply_topic(gw.cfg.fleet, gw.cfg.node_id)
        self.max_chunk = mcfg.max_chunk
        self._pending = []      # replies waiting for a connection
        self.later = gw.loop.call_soon

    def on_message(self, topic, payload):
        if RB.is_statement(payload):
            self._rollback(payload)
            return
        self.rx.receive_data(payload, now_ms())
        self._drain()

    def _rollback(self, stmt):
        """A signed rollback statement (`aegis rollback --out`), published on
        this node's deploy topic; answered like a transfer result, with id =
        the first 16 bytes of sha256(statement) in hex."""
        tid = hashlib.sha256(bytes(stmt)).hexdigest()[:32]
        op = RB.peek_op(stmt)
        try:
            if op == "remove":      # signed `aegis remove --key` (node/admission.py)
                from node.admission import apply_remove
                r = apply_remove(self.host, stmt)
            else:
                r = self.host.rollback(stmt)
        except (InstallError, ValueError) as e:
            self.counts["refused"] += 1
            self.log("warn", "%s refused" % ("removal" if op == "remove" else "rollback"),
                     reason=str(e))
            reply = {"t": "result", "id": tid, "ok": False, "error": str(e)}
        else:
            reply = {"t": "result", "id": tid, "ok": True, "state": r["state"],
                     "module": "%s@%s" % (r["name"], r["version"])}
            self.gw.kick()
        self._pending.append(cbor.dumps(reply))
        self.flush_replies()

    def tick(self):
        self.rx.tick(now_ms())
        self._drain()

    def _drain(self):
        self.drain_events({}, self._send)
        self._send()

    def _send(self):
        self._pending.extend(b for _, b in self.rx.messages_to_send())
        self.flush_replies()

    def flush_replies(self):
        while self._pending:
            if self.link.publish(self.reply, self._pending[0], qos=1) is None:
                break       # not connected: the sender re-offers anyway
            self._pending.pop(0)
        del self._pending[256:]     # bounded; stale replies are worthless
