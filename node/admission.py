"""What a package must pass before the host loads it, and signed rollbacks.

Admission (every install, restore and rollback target):
  - the package signature and hash (node/core/package.py);
  - the node's limits: `fuel_max`, `memory_pages_max` from its config;
  - ABI v1 imports/exports and the initial memory (node/core/imports.py);
  - metering: a metered manifest needs a module metered the way
    node/core/metering.py meters (node/core/meterverify.py); an unmetered
    one is refused unless the node allows unmetered modules;
  - memory: the module's declared maximum is lowered to
    limits.memory_pages (node/core/memcap.py), so memory.grow past the
    limit returns -1.

Rollback (`apply_rollback`): a signed statement (node/core/rollback.py)
names module, from-version and to-version; it applies only while `from`
is active, its nonce is remembered, and `from` is then blocked, so neither
the statement nor the newer package can be replayed.
"""
import hashlib

from node.core import cbor, memcap, meterverify, package as pk, rollback as rb
from node.core.imports import check_module

NONCES = "rollback/nonces.cbor"
NONCES_KEPT = 512


class Limits:
    """The node's own bounds on what a manifest may ask for."""

    def __init__(self, allow_unmetered=False, fuel_max=None, memory_pages_max=None):
        self.allow_unmetered = allow_unmetered
        self.fuel_max = fuel_max
        self.memory_pages_max = memory_pages_max


def check_head(head, verifiers):
    """The signed header of a package whose first bytes are `head` (a push
    still arriving): -> `checked` for admit(), None when `head` does not
    hold the whole header yet.  Raises PackageError (bad magic or header,
    unknown key, bad signature): the rest cannot change that."""
    if len(head) < 12:
        return None
    n = int.from_bytes(head[8:12], "big")
    if head[:8] == pk.MAGIC and 1 <= n <= pk.HEADER_MAX and len(head) < 12 + n:
        return None
    hdr = pk.parse_header(head)
    pk.verify_signature(hdr, verifiers)
    return bytes(head[:hdr.wasm_offset]), hdr, verifiers.get(hdr.kid)


def _open(data, verifiers, checked):
    """pk.open_package, without parsing and verifying again a header that
    check_head() passed: same header bytes, same trusted key object (a
    reload of the keys in between means a full check)."""
    if checked is not None:
        head, hdr, v = checked
        if v is not None and verifiers.get(hdr.kid) is v and bytes(data[:len(head)]) == head:
            wasm = memoryview(data)[hdr.wasm_offset:]
            if len(wasm) != hdr.manifest["size"]:
                raise pk.PackageError("wasm is %d bytes, manifest says %d (truncated?)"
                                      % (len(wasm), hdr.manifest["size"]))
            if hashlib.sha256(wasm).digest() != hdr.manifest["sha256"]:
                raise pk.PackageError("wasm hash does not match the signed manifest")
            return hdr, wasm
    return pk.open_package(data, verifiers)


def admit(data, verifiers, limits, checked=None):
    """-> (Header, wasm bytes to load, imported ABI names).  Raises ValueError
    with the reason.  `checked`: from check_head() on this package's first
    bytes (its signature was verified as the push arrived)."""
    hdr, wasm = _open(data, verifiers, checked)
    m = hdr.manifest
    lim = m["limits"]
    pages = lim["memory_pages"]
    if limits.memory_pages_max is not None and pages > limits.memory_pages_max:
        raise pk.PackageError("%s@%s asks for %d memory pages; this node allows at most %d"
                              % (hdr.name, hdr.version, pages, limits.memory_pages_max))
    metered = bool(m.get("metered"))
    info, names = check_module(wasm, pages, metered)
    if metered:
        if limits.fuel_max is not None and lim["fuel"] > limits.fuel_max:
            raise pk.PackageError("%s@%s asks for %d fuel per call; this node allows at most %d"
                                  % (hdr.name, hdr.version, lim["fuel"], limits.fuel_max))
        meterverify.verify(wasm)
    elif not limits.allow_unmetered:
        raise pk.PackageError("%s@%s is not metered (packed with --no-meter?); this node "
                              "refuses unmetered modules (config: [limits] allow_unmetered)"
                              % (hdr.name, hdr.version))
    wasm = memcap.cap_memory(wasm, pages)
    return hdr, wasm, names


def _nonces(store):
    raw = store.read(NONCES)
    if not raw:
        return []
    try:
        v = cbor.loads(raw)
    except ValueError:
        return []
    return [x for x in v if type(x) is bytes] if type(v) is list else []


def _open_for_active(host, stmt_bytes, what, kinds):
    """A verified statement of `kinds` whose nonce is unspent and whose
    `from` is the active version: (statement, module, spent nonces)."""
    st = rb.open_statement(stmt_bytes, host.verifiers, host.node_id, host.clock(), kinds)
    used = _nonces(host.store)
    if st["nonce"] in used:
        raise rb.RollbackError("%s statement already used (replayed nonce)" % what)
    mod = host.modules.get(st["module"])
    cur = mod.active.version if mod and mod.active else None
    if cur != st["from"]:
        raise rb.RollbackError("%s statement is for %s@%s, but the active version is %s"
                               % (what, st["module"], st["from"], cur or "none"))
    return st, mod, used


def apply_rollback(host, stmt_bytes, package=None):
    """Verify a signed rollback statement and switch the module to its
    target version.  The target package comes with the statement or from
    the node's store.  Returns the install result; raises ValueError."""
    from node.host import InstallError
    st, mod, used = _open_for_active(host, stmt_bytes, "rollback", ("rollback",))
    name, frm, to = st["module"], st["from"], st["to"]
    if package is None:
        package = host.store.read("packages/%s/%s.pkg" % (name, to))
        if package is None:
            raise InstallError("%s@%s is not in this node's store; send its package "
                               "with the rollback" % (name, to))
    hdr, wasm, names = host._verify(package)
    if hdr.name != name or hdr.version != to:
        raise rb.RollbackError("package is %s@%s, the statement names %s@%s"
                               % (hdr.name, hdr.version, name, to))
    # Remember the nonce before switching: a crash mid-way must not leave a
    # statement that can be used again.
    host.store.write(NONCES, cbor.dumps((used + [st["nonce"]])[-NONCES_KEPT:]))
    r = host._activate(package, hdr, wasm, names, mod.active)
    host.block_version(name, frm)
    host.log("warn", "rolled back by signed statement", module=name, bad=frm, restored=to)
    r["rolled_back_from"] = frm
    return r


def apply_remove(host, stmt_bytes):
    """Verify a signed removal statement (rollback.make_remove) and remove
    the module: it applies only while `from` is the active version, its
    nonce is spent first (shared with rollbacks).  Raises ValueError."""
    st, _, used = _open_for_active(host, stmt_bytes, "removal", ("remove",))
    name, frm = st["module"], st["from"]
    host.store.write(NONCES, cbor.dumps((used + [st["nonce"]])[-NONCES_KEPT:]))
    host.remove(name)
    host.log("warn", "removed by signed statement", module=name, version=frm)
    return {"name": name, "version": frm, "state": "removed"}
