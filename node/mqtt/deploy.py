"""Node side of module push over MQTT: transfer.Receiver on the gateway's
DirStore, install through the host's A/B lifecycle, reply on our own
deploy/reply topic.  Runs on the gateway's event loop thread."""
import hashlib
import time

from node.core import cbor, rollback as RB, transfer as T
from node.core.fleet import reply_topic
from node.host import InstallError


def now_ms():
    return int(time.monotonic() * 1000)


class Deployer:
    def __init__(self, gw, link, mcfg):
        self.gw, self.link, self.log, self.host = gw, link, gw.log, gw.host
        self.reply = reply_topic(gw.cfg.fleet, gw.cfg.node_id)
        self.max_chunk = mcfg.max_chunk
        self.rx = T.Receiver(gw.store, max_size=mcfg.max_package, is_active=self._is_active)
        self._sha = {}          # (name, version) -> sha256 of the stored package
        self.counts = {"installed": 0, "refused": 0, "bad_messages": 0}
        self._pending = []      # replies waiting for a connection

    def _is_active(self, tid, name, version, sha):
        mod = self.host.modules.get(name)
        slot = mod.active if mod else None
        if slot is None or slot.version != version:
            return None
        key = (name, version)
        if key not in self._sha:
            data = self.host.store.read("packages/%s/%s.pkg" % key)
            self._sha[key] = hashlib.sha256(data).digest() if data else None
        # Same version, different bytes (re-signed, rebuilt): not a no-op;
        # the install then says "already active" or refuses, as locally.
        return slot.life.state if self._sha[key] == sha else None

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
        try:
            r = self.host.rollback(stmt)
        except (InstallError, ValueError) as e:
            self.counts["refused"] += 1
            self.log("warn", "rollback refused", reason=str(e))
            reply = {"t": "result", "id": tid, "ok": False, "error": str(e)}
        else:
            reply = {"t": "result", "id": tid, "ok": True, "state": r["state"],
                     "module": "%s@%s" % (r["name"], r["version"])}
            self.gw.kick()
            self.gw.mesh.status_changed()
        self._pending.append(cbor.dumps(reply))
        self.flush_replies()

    def tick(self):
        self.rx.tick(now_ms())
        self._drain()

    def _drain(self):
        while True:
            ev = self.rx.next_event()
            if ev is None:
                break
            if isinstance(ev, T.Complete):
                self._install(ev)
            elif isinstance(ev, T.Started):
                self.log("info", "transfer started", transfer=ev.tid,
                         module="%s@%s" % (ev.name, ev.version), size=ev.size,
                         chunks=ev.n, have=ev.have)
            elif isinstance(ev, T.TransferError):
                self.counts["bad_messages"] += 1
                n = self.counts["bad_messages"]
                if n <= 50 or n % 1000 == 0:
                    self.log("warn", "transfer problem", transfer=ev.tid, error=ev.text,
                             total=n)
        self._pending.extend(b for _, b in self.rx.messages_to_send())
        self.flush_replies()

    def flush_replies(self):
        while self._pending:
            if self.link.publish(self.reply, self._pending[0], qos=1) is None:
                break       # not connected: the sender re-offers anyway
            self._pending.pop(0)
        del self._pending[256:]     # bounded; stale replies are worthless

    def _install(self, c):
        label = "%s@%s" % (c.name, c.version)
        data = self.gw.store.read(c.store_name)
        try:
            if data is None:
                raise InstallError("received package vanished from the store")
            r = self.host.install(data)
        except (InstallError, ValueError) as e:
            self.counts["refused"] += 1
            self.log("warn", "pushed module refused", transfer=c.tid, module=label,
                     reason=str(e))
            self.rx.finish(c.tid, False, str(e))
        else:
            self.counts["installed"] += 1
            self.gw.store.delete(c.store_name)  # host.install kept its own copy
            state = r["state"] if r.get("changed") else "%s (already active)" % r["state"]
            self.log("info", "pushed module installed", transfer=c.tid,
                     module="%s@%s" % (r["name"], r["version"]), state=r["state"],
                     changed=r.get("changed"))
            self.rx.finish(c.tid, True, state)
            self.gw.kick()
            self.gw.mesh.status_changed()

    def stats(self):
        d = dict(self.counts)
        d.update(transfers=len(self.rx.active()), dup_chunks=self.rx.dups,
                 bad_chunks=self.rx.bad)
        return d
