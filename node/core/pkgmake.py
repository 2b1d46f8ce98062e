# Building signed module packages and opening whole ones held in memory:
# the CLI's and the gateway's side of node/core/package.py (the layout and
# the checks are there).  A board never imports this file: it verifies
# packages from flash (node/board/verify.py).  Also reachable as
# package.make_manifest, package.build, package.open_package,
# package.DEFAULT_LIMITS.
import hashlib

from node.core import cbor
from node.core.package import (HEADER_MAX, MAGIC, PackageError, check_manifest, key_id,
                               parse_header, verify_signature)

ABI_VERSION = 1     # the manifest "abi" this tree writes (package.py checks it)
DEFAULT_LIMITS = {  # package.check_manifest requires exactly these keys
    # Fuel per aegis_start/aegis_event call of a metered module (see
    # docs/METERING.md; = metering.DEFAULT_FUEL, ~50 ms of a tight loop).
    "fuel": 20000000,
    "memory_pages": 16,     # 1 MiB of wasm memory
    "data_max": 65536,      # bytes of event data a module may emit at once
    "state_max": 262144,    # bytes of durable state per module
}


def make_manifest(name, version, wasm, subscribe=(), emit=(), ports=(),
                  limits=None, metered=False):
    lim = dict(DEFAULT_LIMITS)
    if limits:
        lim.update(limits)
    m = {
        "abi": ABI_VERSION,
        "name": name,
        "version": version,
        "sha256": hashlib.sha256(wasm).digest(),
        "size": len(wasm),
        "subscribe": list(subscribe),
        "emit": list(emit),
        "ports": list(ports),
        "limits": lim,
        "metered": bool(metered),
    }
    check_manifest(m)
    return m


def build(manifest, wasm, sign, raw_pub):
    """Package bytes; `sign(msg) -> 64-byte signature`."""
    mb = cbor.dumps(check_manifest(manifest))
    if hashlib.sha256(wasm).digest() != manifest["sha256"] or len(wasm) != manifest["size"]:
        raise PackageError("wasm does not match the manifest's hash/size")
    hdr = cbor.dumps({"manifest": mb, "sig": sign(mb), "kid": key_id(raw_pub)})
    return MAGIC + len(hdr).to_bytes(4, "big") + hdr + wasm


def open_package(data, verifiers):
    """Parse and fully verify package bytes -> (Header, wasm memoryview)."""
    hdr = parse_header(data[:12 + HEADER_MAX])
    verify_signature(hdr, verifiers)
    wasm = memoryview(data)[hdr.wasm_offset:]
    if len(wasm) != hdr.manifest["size"]:
        raise PackageError("wasm is %d bytes, manifest says %d (truncated?)"
                           % (len(wasm), hdr.manifest["size"]))
    if hashlib.sha256(wasm).digest() != hdr.manifest["sha256"]:
        raise PackageError("wasm hash does not match the signed manifest")
    return hdr, wasm
