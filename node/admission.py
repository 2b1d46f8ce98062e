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


def admit(data, verifiers, limits):
    """-> (Header, wasm bytes to load, imported ABI names).  Raises ValueError
    with the reason."""
    hdr, wasm = pk.open_package(data, verifiers)
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


def apply_rollback(host, stmt_bytes, package=None):
    """Verify a signed rollback statement and switch the module to its
    target version.  The target package comes with the statement or from
    the node's store.  Returns the install result; raises ValueError."""
    from node.host import InstallError
    st = rb.open_statement(stmt_bytes, host.verifiers, host.node_id, host.clock())
    name, frm, to = st["module"], st["from"], st["to"]
    used = _nonces(host.store)
    if st["nonce"] in used:
        raise rb.RollbackError("rollback statement already used (replayed nonce)")
    mod = host.modules.get(name)
    cur = mod.active.version if mod and mod.active else None
    if cur != frm:
        raise rb.RollbackError("rollback statement is for %s@%s, but the active version is %s"
                               % (name, frm, cur or "none"))
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
