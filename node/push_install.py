"""Install side of a module push, shared by the MQTT (node/mqtt/deploy.py)
and QUIC (node/quic/deploy.py) transports: a transfer.Receiver on the
gateway's DirStore, its events logged, a finished package installed through
the host's A/B lifecycle.  Subclasses only route the Receiver's replies."""
import hashlib
import time

from node.core import transfer as T
from node.host import InstallError


def now_ms():
    return int(time.monotonic() * 1000)


class PushInstaller:
    # Extra log fields naming the transport ({} for MQTT, the original).
    LOG_TAG = {}

    def __init__(self, gw, max_package, prefix="incoming/"):
        self.gw, self.host, self.log = gw, gw.host, gw.log
        self.rx = T.Receiver(gw.store, max_size=max_package, is_active=self._is_active,
                             prefix=prefix)
        self._sha = {}          # (name, version) -> sha256 of the stored package
        self.counts = {"installed": 0, "refused": 0, "bad_messages": 0}

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

    def drain_events(self, more):
        """Handle every pending Receiver event; `more` (QUIC: the peer) goes
        into the logs. The Receiver's replies are left for the caller."""
        while True:
            ev = self.rx.next_event()
            if ev is None:
                break
            if isinstance(ev, T.Complete):
                self._install(ev, more)
            elif isinstance(ev, T.Started):
                self.log("info", "transfer started", **self.LOG_TAG, transfer=ev.tid,
                         module="%s@%s" % (ev.name, ev.version), size=ev.size,
                         chunks=ev.n, have=ev.have, **more)
            elif isinstance(ev, T.TransferError):
                self.counts["bad_messages"] += 1
                n = self.counts["bad_messages"]
                if n <= 50 or n % 1000 == 0:
                    self.log("warn", "transfer problem", **self.LOG_TAG, transfer=ev.tid,
                             error=ev.text, total=n)

    def _install(self, c, more):
        label = "%s@%s" % (c.name, c.version)
        data = self.gw.store.read(c.store_name)
        try:
            if data is None:
                raise InstallError("received package vanished from the store")
            r = self.host.install(data)
        except (InstallError, ValueError) as e:
            self.counts["refused"] += 1
            self.log("warn", "pushed module refused", **self.LOG_TAG, transfer=c.tid,
                     module=label, reason=str(e), **more)
            self.rx.finish(c.tid, False, str(e))
            return
        self.counts["installed"] += 1
        self.gw.store.delete(c.store_name)     # host.install kept its own copy
        state = r["state"] if r.get("changed") else "%s (already active)" % r["state"]
        self.log("info", "pushed module installed", **self.LOG_TAG, transfer=c.tid,
                 module="%s@%s" % (r["name"], r["version"]), state=r["state"],
                 changed=r.get("changed"), **more)
        self.rx.finish(c.tid, True, state)
        self.gw.kick()

    def stats(self):
        d = dict(self.counts)
        d.update(transfers=len(self.rx.active()), dup_chunks=self.rx.dups,
                 bad_chunks=self.rx.bad)
        return d
