# Checks a received package on flash before the board accepts it: header
# and canonical manifest (node.core.package), the Ed25519 signature of one
# of the board's trusted keys (node.board.ed25519, pure Python), and the
# wasm's size and sha256 against the signed manifest, hashed from flash in
# small pieces so a 64 KiB module never sits in RAM.
import hashlib

from node.core import package as pk
from node.board import ed25519

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_PIECE = const(2048)


def verifiers(keys, feed=None):
    """{kid: verify(sig, msg)} for the raw 32-byte public keys; `feed` is
    the watchdog's feed (verification takes seconds on small cores)."""
    return {pk.key_id(k): (lambda k: lambda sig, msg: ed25519.verify(k, msg, sig, feed))(k)
            for k in keys}


def check(store, name, keys):
    """Header of the package stored as `name`, or PackageError."""
    size = store.size(name)
    head = store.read_at(name, 0, 12)
    # parse_header checks the magic and the header's length (read only
    # when in bounds) and that it is all there.
    n = int.from_bytes(head[8:12], "big") if len(head) == 12 else 0
    hdr = pk.parse_header(head + store.read_at(name, 12, n if n <= pk.HEADER_MAX else 0))
    pk.verify_signature(hdr, keys)
    m = hdr.manifest
    if size - hdr.wasm_offset != m["size"]:
        raise pk.PackageError("wasm is %d bytes, manifest says %d"
                              % (size - hdr.wasm_offset, m["size"]))
    if sha256_of(store, name, hdr.wasm_offset, size) != m["sha256"]:
        raise pk.PackageError("wasm hash does not match the signed manifest")
    return hdr


def sha256_of(store, name, off, size, feed=None):
    """sha256 of bytes off..size of a stored object, read in small pieces."""
    h = hashlib.sha256()
    while off < size:
        b = store.read_at(name, off, min(_PIECE, size - off))
        if not b:
            break
        h.update(b)
        off += len(b)
        if feed:
            feed()
    return h.digest()
