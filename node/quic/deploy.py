"""Gateway side of `aegis push --quic`: a transfer.Receiver fed from push
streams; a finished package is installed through the host's A/B lifecycle
and the final `result` goes back on the stream it came from.

One stream carries one push: hello {"p": "push"}, then transfer messages
(node/core/transfer.py) one per frame, replies on the same stream.  The
Receiver keeps its files under `incoming-quic/` so a push over MQTT of the
same package at the same time cannot collide with it.
"""
import hashlib
import time

from node.core import transfer as T
from node.host import InstallError


def now_ms():
    return int(time.monotonic() * 1000)


class PushStream:
    def __init__(self, deployer, link, stream):
        self.d, self.link, self.stream = deployer, link, stream

    def on_frame(self, payload):
        self.d.rx.receive_data(payload, now_ms())
        self.d.drain(self)

    def on_close(self, why):
        pass    # the Receiver keeps the progress; a new stream resumes it

    def reply(self, msg):
        try:
            self.stream.send(msg)
        except ConnectionError:
            pass    # link gone: the sender re-offers after reconnecting


class Deployer:
    def __init__(self, gw, max_package):
        self.gw, self.host, self.log = gw, gw.host, gw.log
        self.rx = T.Receiver(gw.store, max_size=max_package, is_active=self._is_active,
                             prefix="incoming-quic/")
        self._sha = {}
        self.counts = {"installed": 0, "refused": 0, "bad_messages": 0}

    def stream(self, link, stream):
        return PushStream(self, link, stream)

    def _is_active(self, tid, name, version, sha):
        mod = self.host.modules.get(name)
        slot = mod.active if mod else None
        if slot is None or slot.version != version:
            return None
        key = (name, version)
        if key not in self._sha:
            data = self.host.store.read("packages/%s/%s.pkg" % key)
            self._sha[key] = hashlib.sha256(data).digest() if data else None
        return slot.life.state if self._sha[key] == sha else None

    def tick(self):
        self.rx.tick(now_ms())
        self.drain(None)

    def drain(self, ps):
        while True:
            ev = self.rx.next_event()
            if ev is None:
                break
            if isinstance(ev, T.Complete):
                self._install(ev, ps)
            elif isinstance(ev, T.Started):
                self.log("info", "transfer started", transport="quic", transfer=ev.tid,
                         module="%s@%s" % (ev.name, ev.version), size=ev.size, chunks=ev.n,
                         have=ev.have, peer=ps.link.peer if ps else None)
            elif isinstance(ev, T.TransferError):
                self.counts["bad_messages"] += 1
                n = self.counts["bad_messages"]
                if n <= 50 or n % 1000 == 0:
                    self.log("warn", "transfer problem", transport="quic", transfer=ev.tid,
                             error=ev.text, total=n)
        for _tid, msg in self.rx.messages_to_send():
            if ps is not None:      # replies answer the message just fed
                ps.reply(msg)

    def _install(self, c, ps):
        label = "%s@%s" % (c.name, c.version)
        data = self.gw.store.read(c.store_name)
        peer = ps.link.peer if ps else None
        try:
            if data is None:
                raise InstallError("received package vanished from the store")
            r = self.host.install(data)
        except (InstallError, ValueError) as e:
            self.counts["refused"] += 1
            self.log("warn", "pushed module refused", transport="quic", transfer=c.tid,
                     module=label, reason=str(e), peer=peer)
            self.rx.finish(c.tid, False, str(e))
            return
        self.counts["installed"] += 1
        self.gw.store.delete(c.store_name)     # host.install kept its own copy
        state = r["state"] if r.get("changed") else "%s (already active)" % r["state"]
        self.log("info", "pushed module installed", transport="quic", transfer=c.tid,
                 module="%s@%s" % (r["name"], r["version"]), state=r["state"],
                 changed=r.get("changed"), peer=peer)
        self.rx.finish(c.tid, True, state)
        self.gw.kick()
        if self.gw.mesh is not None:
            self.gw.mesh.status_changed()

    def stats(self):
        d = dict(self.counts)
        d.update(transfers=len(self.rx.active()), dup_chunks=self.rx.dups,
                 bad_chunks=self.rx.bad)
        return d
