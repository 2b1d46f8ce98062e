# A runtime bundle pushed to the board (docs/BOARDS.md "Runtime updates
# over the mesh"): it arrived like a module package, chunk by chunk into
# flash (node/board/deploy.py), and is checked here -- magic, canonical
# manifest, an Ed25519 signature of a trusted key, this board and arch, no
# downgrade or replay, the payload's sha256 read back from flash -- then
# unpacked into the slot not running, and the marker switched by atomic
# rename.  The pusher gets its answer; then the board restarts into the
# new slot on trial (node/board/rtslot.py, firmware/rtboot.py).  Loaded only
# for this; nothing here holds more than a 2 KiB piece in RAM.
import gc
import os

from node.board import rtslot as S
from node.board.deploy import log, unload

_PIECE = 2048


def _rm(p):
    try:
        if os.stat(p)[0] & 0x4000:
            for n in os.listdir(p):
                _rm(p + "/" + n)
            os.rmdir(p)
        else:
            os.remove(p)
    except OSError:
        pass


def _mkdirs(d):
    cur = ""
    for part in d.split("/"):
        cur = cur + "/" + part if cur else part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def complete(dep, tid, name):
    b = dep.b
    feed = b.wdt.feed if b.wdt is not None else None
    try:
        try:
            hdr = _check(b, name, feed)
        finally:
            unload("node.board.verify", "node.board.ed25519", "node.core.package",
                   "node.core.rtbundle")
        m = hdr.manifest
        if m["version"] == b.rt["v"]:
            b.store.delete(name)
            return dep.finish(tid, True, "runtime %s already active" % m["version"])
        new = "b" if b.rt["slot"] == "a" else "a"
        _unpack(b, name, m, hdr.offset, new, feed)
    except Exception as e:      # BundleError, PackageError, OSError (flash full), MemoryError
        log("refused runtime bundle:", e)
        b.counts["deploy_refused"] += 1
        b._status_due = True
        dep.finish(tid, False, str(e))
        unload("node.board.rtupdate", "node.board.rtslot")
        return
    b.store.delete(name)
    # The switch: one atomic rename.  A reset from here on boots the new
    # slot on trial; before it, the old slot as if nothing happened.
    S.write_json(S.MARK, {"slot": new, "prev": b.rt["slot"], "v": m["version"],
                          "pv": b.rt["v"], "state": "trial", "tries": 0})
    gc.collect()
    log("runtime %s verified and unpacked into slot %s (%d bytes, heap peak %d); restarting"
        % (m["version"], new, m["size"], max(b.heap_peak, gc.mem_alloc())))
    dep.finish(tid, True, "runtime %s installed in slot %s; restarting into it"
               % (m["version"], new))
    b.restart_why = "runtime update to %s" % m["version"]
    b.restart_at = b.now() + 200        # once the answer is acked (ticker)


def _check(b, name, feed):
    from node.core import rtbundle as R
    from node.core import package as pk
    from node.board import verify
    st = b.store
    head = st.read_at(name, 0, 12)
    hdr = R.parse_header(head + st.read_at(name, 12, R.header_len(head)))
    pk.verify_signature(hdr, verify.verifiers(b.keys, feed))
    m = hdr.manifest
    v = m["version"]
    if m["board"] != b.cfg.get("board"):
        raise R.BundleError("runtime %s is built for board %r; this board is %r"
                            % (v, m["board"], b.cfg.get("board")))
    arch = S.read_json(S.SLOTS[b.rt["slot"]] + "rt.json").get("arch")
    if arch and m["arch"] != arch:
        raise R.BundleError("runtime %s is built for arch %s; this board runs %s"
                            % (v, m["arch"], arch))
    cur = b.rt["v"]
    if cur != "?" and pk.parse_version(v) < pk.parse_version(cur):
        raise R.BundleError("runtime %s is older than the running %s; refusing a downgrade"
                            % (v, cur))
    failed = b.rt.get("failed") or {}
    if failed.get("v") == v and v != cur:
        raise R.BundleError("runtime %s already failed on this board (%s); push a newer version"
                            % (v, failed.get("error")))
    store_top = st.root.strip("/").split("/")[0]
    for path, _ in m["files"]:
        if path.split("/")[0] == store_top:
            raise R.BundleError("bundle may not write into the store %r" % store_top)
    size = st.size(name)
    if size - hdr.offset != m["size"]:
        raise R.BundleError("payload is %d bytes, manifest says %d"
                            % (size - hdr.offset, m["size"]))
    if verify.sha256_of(st, name, hdr.offset, size, feed) != m["sha256"]:
        raise R.BundleError("payload hash does not match the signed manifest")
    return hdr


def _unpack(b, name, m, off, slot, feed):
    """Files into `slot` (not the running one), straight from the bundle
    on flash in small pieces, then the slot's rt.json."""
    base = S.SLOTS[slot]
    if base:
        _rm(base.rstrip("/"))
        os.mkdir(base.rstrip("/"))
    else:   # slot A is the top level: clear what a runtime put there
        for top in ["lib", "rt.json"] + [p.split("/")[0] for p, _ in m["files"]]:
            _rm(top)
    gc.collect()
    free = b.store.free()
    if 0 <= free < m["size"] + 8192:
        raise OSError("not enough flash for runtime %s: %d bytes free, %d needed"
                      % (m["version"], free, m["size"]))
    st = b.store
    for path, size in m["files"]:
        full = base + path
        i = full.rfind("/")
        if i > 0:
            _mkdirs(full[:i])
        with open(full, "wb") as f:
            left = size
            while left:
                d = st.read_at(name, off, min(_PIECE, left))
                if not d:
                    raise OSError("bundle ends inside %s" % path)
                f.write(d)
                off += len(d)
                left -= len(d)
                if feed:
                    feed()
    S.write_json(base + "rt.json", {"v": m["version"], "board": m["board"], "arch": m["arch"]})
