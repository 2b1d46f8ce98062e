# Module pushes on a board: the core transfer receiver on flash, the
# signature and hash checks, and the answer to the pusher once the module
# runs (docs/BOARDS.md).  Code needed only while a push is in flight is
# loaded for it and unloaded after: transfer.py (~20 KiB of heap) after 30
# idle ticks, the verifier (~13 KiB) right after the check.
import gc
import sys

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_IDLE_TICKS = const(30)


def log(*a):
    print("aegis:", *a)


def transfer():
    """node.core.transfer, loaded on demand."""
    from node.core import transfer as T
    # Hash packages in small pieces: a 16 KiB read needs a 16 KiB
    # contiguous block, which a fragmented 192 KiB heap may not have.
    T._HASH_PIECE = 2048
    return T


def unload(*names):
    for n in names:
        sys.modules.pop(n, None)
        pkg, _, leaf = n.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and hasattr(parent, leaf):
            delattr(parent, leaf)
    gc.collect()


def record(hdr, pkg_name):
    """What the board keeps per module (mods/<name>.cbor): small, so the
    manifest's capabilities are checked without re-reading the package."""
    m = hdr.manifest
    return {"name": hdr.name, "v": hdr.version, "pkg": pkg_name, "size": m["size"],
            "sub": m["subscribe"], "emit": m["emit"], "ports": m["ports"], "tid": ""}


class Deploys:
    def __init__(self, board):
        self.b = board
        self.rx = None          # transfer.Receiver while pushes are in progress
        self.bad = 0            # its bad-message count, kept across unloads
        self._idle = 0

    def receiver(self):
        if self.rx is None:
            # Two transfers: a sender's last poll can open a new one just after
            # a refusal ended the old; idle ones expire soon to free the slot.
            self.rx = transfer().Receiver(
                self.b.store, max_size=int(self.b.cfg.get("max_package", 262144)),
                max_transfers=2, idle_ms=15000, is_active=self._is_active)
        self._idle = 0
        return self.rx

    def bad_count(self):
        return self.bad + (self.rx.bad if self.rx else 0)

    def tick(self, now):
        rx = self.rx
        if rx is not None:
            rx.tick(now)
            self.out()
            if rx.active() or self.b._pending:
                self._idle = 0
                return
            self._idle += 1
            if self._idle < _IDLE_TICKS:
                return
            self.bad += rx.bad
            self.rx = None      # progress is on flash: the next offer resumes
        if not self.b.proxy.busy() and "node.core.transfer" in sys.modules:
            unload("node.core.transfer", "node.core.transfer_send")

    def out(self):
        if self.rx is None:
            return
        for _, b in self.rx.messages_to_send():
            self.b.link.publish(self.b.t_reply, b, 1)

    def on_message(self, payload):
        T = transfer()
        rx = self.receiver()
        rx.receive_data(bytes(payload), self.b.now())
        while True:
            ev = rx.next_event()
            if ev is None:
                break
            t = type(ev)
            if t is T.Complete:
                self._complete(ev)
            elif t is T.Started:
                log("receiving %s@%s: %d bytes, %d/%d chunks held"
                    % (ev.name, ev.version, ev.size, ev.have, ev.n))
        self.out()

    def finish(self, tid, ok, detail):
        try:
            self.receiver().finish(tid, ok, detail)
        except ValueError:          # transfer.TransferError: already finished
            pass
        self.out()

    def _is_active(self, tid, name, version, sha):
        rec = self.b.mods.get(name)
        if rec and rec["v"] == version and rec.get("tid") == tid and rec["state"] == "running":
            return "running (%s, already active)" % rec["mode"]
        return None

    def _complete(self, c):
        b = self.b
        gc.collect()
        from node.board import verify
        from node.core import package as pk
        try:
            feed = b.wdt.feed if b.wdt is not None else None
            hdr = verify.check(b.store, c.store_name, verify.verifiers(b.keys, feed))
            cur = b.mods.get(hdr.name)
            if cur is not None and pk.parse_version(hdr.version) < pk.parse_version(cur["v"]):
                raise pk.PackageError("%s@%s is older than the active %s; refusing a downgrade"
                                      % (hdr.name, hdr.version, cur["v"]))
        except Exception as e:      # PackageError, or MemoryError on a full heap
            hdr = None
            log("refused pushed package:", e)
            b.counts["deploy_refused"] += 1
            b._status_due = True    # operators see the refusal count
            self.finish(c.tid, False, str(e))
        finally:
            del verify, pk
            unload("node.board.verify", "node.board.ed25519", "node.core.package")
        if hdr is None:
            return
        pkg = "pkgs/%s@%s.pkg" % (hdr.name, hdr.version)
        b.store.rename(c.store_name, pkg)
        rec = record(hdr, pkg)
        rec["tid"], rec["state"] = c.tid, "starting"
        b._pending["%s@%s" % (hdr.name, hdr.version)] = rec
        log("package %s@%s verified (%d bytes)" % (hdr.name, hdr.version, c.size))
        b.run(rec, c.tid)
