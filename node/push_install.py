"""Install side of a module push, shared by the MQTT (node/mqtt/deploy.py)
and QUIC (node/quic/deploy.py) transports: a transfer.Receiver on the
gateway's DirStore, its events logged, a finished package installed through
the host's A/B lifecycle.  Subclasses only route the Receiver's replies."""
import hashlib
import time

from node.admission import check_head
from node.core import package as pk, transfer as T
from node.core.store import StoreError
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
        self._heads = {}        # tid -> [label, prefix bytes tried, check_head() result]
        # later(fn, *args): run fn on a later turn of the event loop (the
        # gateway's loop.call_soon).  Set, a completed package is installed
        # on the next turn, so the replies sent before it (the last ack)
        # leave while it installs; None: at once.
        self.later = None
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

    def drain_events(self, more, send=None):
        """Handle every pending Receiver event; `more` (QUIC: the peer) goes
        into the logs. The Receiver's replies are left for the caller;
        `send()`, when given, sends the queued ones before an install runs
        (the sender sees its last ack while the node verifies)."""
        while True:
            ev = self.rx.next_event()
            if ev is None:
                break
            if isinstance(ev, T.Complete):
                if send is not None:
                    send()
                head = self._heads.pop(ev.tid, None)
                if self.later is not None:
                    self.later(self._install_later, ev, more, head and head[2], send)
                else:
                    self._install(ev, more, head and head[2])
            elif isinstance(ev, T.Started):
                self._heads[ev.tid] = ["%s@%s" % (ev.name, ev.version), -1, None]
                self.log("info", "transfer started", **self.LOG_TAG, transfer=ev.tid,
                         module="%s@%s" % (ev.name, ev.version), size=ev.size,
                         chunks=ev.n, have=ev.have, **more)
            elif isinstance(ev, T.TransferError):
                self.counts["bad_messages"] += 1
                n = self.counts["bad_messages"]
                if n <= 50 or n % 1000 == 0:
                    self.log("warn", "transfer problem", **self.LOG_TAG, transfer=ev.tid,
                             error=ev.text, total=n)
        self._check_heads(more)

    def _check_heads(self, more):
        """Check a pushed package's signed header as soon as its first
        chunks are in, while the rest arrives: the install then skips that
        part, and a package whose signature fails is refused at once."""
        if not self._heads:
            return
        active = self.rx.active()
        for tid, h in list(self._heads.items()):
            if tid not in active:
                # Ended without a Complete (refused at the hash check,
                # forgotten while idle): forget it here too, checked or not.
                del self._heads[tid]
                continue
            if h[2] is not None:
                continue
            name, n = self.rx.received_head(tid)
            if name is None:
                continue
            if n < 12 or n == h[1]:
                continue
            h[1] = n
            try:
                h[2] = check_head(self.gw.store.read_at(name, 0, min(n, 12 + pk.HEADER_MAX)),
                                  self.host.verifiers)
            except ValueError as e:
                del self._heads[tid]
                self.counts["refused"] += 1
                self.log("warn", "pushed module refused", **self.LOG_TAG, transfer=tid,
                         module=h[0], reason=str(e), **more)
                self.rx.refuse(tid, str(e))

    def _install_later(self, c, more, checked, send):
        try:
            self._install(c, more, checked)
        except Exception as e:      # a bug must not leave the pusher waiting
            self.log("error", "push install failed", **self.LOG_TAG, transfer=c.tid,
                     error=repr(e), **more)
            try:
                self.rx.finish(c.tid, False, "internal error: %r" % e)
            except T.TransferError:
                pass                # finished before it failed
        if send is not None:
            send()                  # the result

    def _install(self, c, more, checked=None):
        label = "%s@%s" % (c.name, c.version)
        data = self.gw.store.read(c.store_name)
        try:
            if data is None:
                raise InstallError("received package vanished from the store")
            # The received file itself goes into place (no second copy);
            # the host waits for its fsync (started by the Receiver) first.
            r = self.host.install(data, stored=c.store_name, checked=checked)
        except (InstallError, ValueError, OSError, StoreError) as e:
            # OSError, StoreError: the disk failed us (e.g. the fsync); the
            # pusher hears why instead of waiting for a result.
            self.counts["refused"] += 1
            self.log("warn", "pushed module refused", **self.LOG_TAG, transfer=c.tid,
                     module=label, reason=str(e), **more)
            self.rx.finish(c.tid, False, str(e))
            return
        self.counts["installed"] += 1
        self.gw.store.delete(c.store_name)     # left over when already active
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
