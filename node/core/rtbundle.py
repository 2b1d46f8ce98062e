# Signed runtime bundles: the board runtime's files (what `aegis flash`
# puts on a board, node/flash.py) in one file, for updates over the mesh
# (docs/BOARDS.md "Runtime updates over the mesh").
#
# Layout (big-endian), like a module package but never mistaken for one:
#   b"AEGISRT1" | u32 header_len | header | payload
#   header  = CBOR {"manifest": canonical manifest bytes, "sig", "kid"}
#   payload = the files' bytes, concatenated in manifest order
#   manifest = {"kind": "aegis-runtime", "version", "board", "arch",
#               "files": [[path, size], ...], "size", "sha256"}  (payload's)
# The signature covers MAGIC + manifest bytes, so a runtime signature never
# verifies as a module's (whose signed bytes are the bare manifest), and the
# manifests themselves have no keys in common that either check accepts.
import hashlib

from node.core import cbor
from node.core import package as pk

MAGIC = b"AEGISRT1"
KIND = "aegis-runtime"
HEADER_MAX = 16384
MAX_FILES = 256
MAX_SIZE = 4 << 20
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
# Top-level names a bundle may never write: the boot file, the config and
# certificates, the boot marker and the other slot are not the runtime's.
RESERVED = ("main.py", "boot.py", "aegis.json", "certs", "rtboot.json", "rt.json", "rt_b")


class BundleError(ValueError):
    pass


def check_path(p):
    if type(p) is not str or not 1 <= len(p) <= 128:
        raise BundleError("bundle file path must be 1..128 characters")
    parts = p.split("/")
    for part in parts:
        if part in ("", ".", "..") or any(c not in _PATH_CHARS for c in part):
            raise BundleError("bad bundle file path %r" % p)
    top = parts[0].lower()      # FAT (a board's optional filesystem) ignores case
    if top in RESERVED or top.startswith("rtboot"):
        raise BundleError("bundle may not write %r" % p)
    return p


def check_manifest(m):
    """Validate a decoded runtime manifest; returns it.  Raises BundleError."""
    if type(m) is not dict or m.get("kind") != KIND:
        raise BundleError("not a runtime manifest (kind must be %r)" % KIND)
    try:
        pk.parse_version(m.get("version"))
    except pk.PackageError as e:
        raise BundleError(str(e))
    for k in ("board", "arch"):
        v = m.get(k)
        if type(v) is not str or not 1 <= len(v) <= 32:
            raise BundleError("manifest %r must be 1..32 characters" % k)
    h, size, files = m.get("sha256"), m.get("size"), m.get("files")
    if type(h) is not bytes or len(h) != 32:
        raise BundleError("manifest sha256 must be 32 bytes")
    if type(files) is not list or not 1 <= len(files) <= MAX_FILES:
        raise BundleError("manifest files must list 1..%d files" % MAX_FILES)
    total, seen = 0, set()
    for f in files:
        if type(f) is not list or len(f) != 2 or type(f[1]) is not int or f[1] < 0:
            raise BundleError("manifest files entries must be [path, size]")
        p = check_path(f[0])
        if p in seen:
            raise BundleError("file %r listed twice" % p)
        seen.add(p)
        total += f[1]
    if type(size) is not int or size != total or size > MAX_SIZE:
        raise BundleError("manifest size %r must be the files' total (%d), at most %d"
                          % (size, total, MAX_SIZE))
    return m


def make_manifest(version, board, arch, files):
    """files: [(path, bytes)] -> (manifest, payload)."""
    payload = b"".join(d for _, d in files)
    m = {"kind": KIND, "version": version, "board": board, "arch": arch,
         "files": [[p, len(d)] for p, d in files], "size": len(payload),
         "sha256": hashlib.sha256(payload).digest()}
    return check_manifest(m), payload


def build(manifest, payload, sign, raw_pub):
    """Bundle bytes; `sign(msg) -> 64-byte signature`."""
    mb = cbor.dumps(check_manifest(manifest))
    if hashlib.sha256(payload).digest() != manifest["sha256"] or len(payload) != manifest["size"]:
        raise BundleError("payload does not match the manifest's hash/size")
    hdr = cbor.dumps({"manifest": mb, "sig": sign(MAGIC + mb), "kid": pk.key_id(raw_pub)})
    return MAGIC + len(hdr).to_bytes(4, "big") + hdr + payload


class Header:
    """What precedes the payload; quacks like package.Header for
    package.verify_signature (manifest_bytes = what was signed)."""

    def __init__(self, manifest, signed, sig, kid, offset):
        self.manifest, self.manifest_bytes = manifest, signed
        self.sig, self.kid, self.offset = sig, kid, offset
        self.name, self.version = KIND, manifest["version"]


def header_len(head):
    """Header length from the first 12 bytes, or BundleError."""
    if len(head) < 12 or head[:8] != MAGIC:
        raise BundleError("not an aegis runtime bundle (bad magic)")
    n = int.from_bytes(head[8:12], "big")
    if not 1 <= n <= HEADER_MAX:
        raise BundleError("bundle header length %d out of range" % n)
    return n


def parse_header(head):
    """Parse the first 12 + header_len bytes of a bundle."""
    n = header_len(head)
    if len(head) < 12 + n:
        raise BundleError("bundle truncated inside its header")
    try:
        h = cbor.loads(bytes(head[12:12 + n]))
        if type(h) is not dict:
            raise BundleError("bundle header is not a map")
        mb = h.get("manifest")
        m = cbor.loads(mb) if type(mb) is bytes else None
    except cbor.CBORError as e:
        raise BundleError("bundle header: %s" % e)
    sig, kid = h.get("sig"), h.get("kid")
    if m is None or type(sig) is not bytes or len(sig) != 64 \
            or type(kid) is not bytes or len(kid) != 8:
        raise BundleError("bundle header lacks manifest/sig/kid")
    check_manifest(m)
    if cbor.dumps(m) != mb:
        raise BundleError("manifest bytes are not canonical CBOR")
    return Header(m, MAGIC + mb, sig, kid, 12 + n)
