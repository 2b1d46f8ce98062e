# Signed module packages: the manifest, its canonical bytes, and the checks.
#
# Layout of a package file (big-endian):
#   b"AEGISPK1" | u32 header_len | header | wasm
#   header = CBOR map {"manifest": canonical manifest bytes,
#                      "sig": Ed25519 signature over those bytes (64),
#                      "kid": key id = sha256(raw public key)[:8]}
# The wasm follows the header so a board can stream it from flash without
# holding it twice; manifest["sha256"] and ["size"] bind it to the signature.
# Verifying a signature is a callable handed in (cryptography on a gateway).
import hashlib

from node.core import cbor
from node.core.bus import check_filter, TopicError

MAGIC = b"AEGISPK1"
HEADER_MAX = 16384
ABI_VERSION = 1
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"
# The most fuel a call can have: wasm3's gas limit is an i32 counted in
# units of GAS_UNIT = 10000 fuel (node/core/metering.py).
FUEL_MAX = 0x7FFFFFFF * 10000
DEFAULT_LIMITS = {
    # Fuel per aegis_start/aegis_event call of a metered module (see
    # docs/METERING.md; = metering.DEFAULT_FUEL, ~50 ms of a tight loop).
    "fuel": 20000000,
    "memory_pages": 16,     # 1 MiB of wasm memory
    "data_max": 65536,      # bytes of event data a module may emit at once
    "state_max": 262144,    # bytes of durable state per module
}


class PackageError(ValueError):
    pass


def key_id(raw_pub):
    return hashlib.sha256(raw_pub).digest()[:8]


def parse_version(v):
    """'1.2.3[-pre][+build]' -> comparable tuple (semver precedence)."""
    if type(v) is not str or not v or len(v) > 64:
        raise PackageError("version must be a semver string like 1.2.0")
    core = v.split("+", 1)[0]
    pre = ""
    if "-" in core:
        core, pre = core.split("-", 1)
        if not pre:
            raise PackageError("empty pre-release in version %r" % v)
    parts = core.split(".")
    if len(parts) != 3:
        raise PackageError("version %r is not MAJOR.MINOR.PATCH" % v)
    nums = []
    for p in parts:
        if not p or not p.isdigit() or (len(p) > 1 and p[0] == "0"):
            raise PackageError("version %r has a bad number %r" % (v, p))
        nums.append(int(p))
    # A release sorts after any of its pre-releases.
    if not pre:
        return (nums[0], nums[1], nums[2], 1, ())
    ids = []
    for x in pre.split("."):
        if not x:
            raise PackageError("empty pre-release field in %r" % v)
        ids.append((0, int(x), "") if x.isdigit() else (1, 0, x))
    return (nums[0], nums[1], nums[2], 0, tuple(ids))


def check_name(name):
    if type(name) is not str or not 1 <= len(name) <= 64:
        raise PackageError("module name must be 1..64 characters")
    for c in name:
        if c not in NAME_CHARS:
            raise PackageError("module name %r: use a-z, 0-9, '_' and '-'" % name)


def _str_list(m, key, check, maxn=64):
    v = m.get(key, [])
    if type(v) is not list or len(v) > maxn:
        raise PackageError("manifest %r must be a list of at most %d" % (key, maxn))
    for x in v:
        if type(x) is not str:
            raise PackageError("manifest %r entries must be text" % key)
        try:
            check(x)
        except TopicError as e:
            raise PackageError("manifest %r: %s" % (key, e))
    return v


def _check_prefix(p):
    if not p or len(p) > 255 or "+" in p or "#" in p:
        raise TopicError("emit prefix %r must be 1..255 chars without wildcards" % p)


def _check_port(p):
    if not 1 <= len(p) <= 64:
        raise TopicError("port name %r must be 1..64 characters" % p)


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


def check_manifest(m):
    """Validate a decoded manifest; returns it.  Raises PackageError."""
    if type(m) is not dict:
        raise PackageError("manifest is not a map")
    if m.get("abi") != ABI_VERSION:
        raise PackageError("manifest ABI %r not supported (this node: %d)"
                           % (m.get("abi"), ABI_VERSION))
    check_name(m.get("name"))
    parse_version(m.get("version"))
    h = m.get("sha256")
    if type(h) is not bytes or len(h) != 32:
        raise PackageError("manifest sha256 must be 32 bytes")
    size = m.get("size")
    if type(size) is not int or not 8 <= size <= (64 << 20):
        raise PackageError("manifest size %r out of range" % size)
    _str_list(m, "subscribe", check_filter)
    _str_list(m, "emit", _check_prefix)
    _str_list(m, "ports", _check_port)
    lim = m.get("limits")
    if type(lim) is not dict:
        raise PackageError("manifest limits must be a map")
    for k in DEFAULT_LIMITS:
        v = lim.get(k)
        if type(v) is not int or v < 0 or v > (1 << 40):
            raise PackageError("manifest limit %r must be a non-negative int" % k)
    if not 1 <= lim["memory_pages"] <= 65536:
        raise PackageError("limits.memory_pages must be 1..65536")
    if type(m.get("metered", False)) is not bool:
        raise PackageError("manifest metered must be a bool")
    if m.get("metered") and not 1 <= lim["fuel"] <= FUEL_MAX:
        raise PackageError("a metered module needs limits.fuel 1..%d" % FUEL_MAX)
    return m


def build(manifest, wasm, sign, raw_pub):
    """Package bytes; `sign(msg) -> 64-byte signature`."""
    mb = cbor.dumps(check_manifest(manifest))
    if hashlib.sha256(wasm).digest() != manifest["sha256"] or len(wasm) != manifest["size"]:
        raise PackageError("wasm does not match the manifest's hash/size")
    hdr = cbor.dumps({"manifest": mb, "sig": sign(mb), "kid": key_id(raw_pub)})
    return MAGIC + len(hdr).to_bytes(4, "big") + hdr + wasm


class Header:
    """What precedes the wasm: manifest (checked), signature, key id."""

    def __init__(self, manifest, manifest_bytes, sig, kid, wasm_offset):
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.sig = sig
        self.kid = kid
        self.wasm_offset = wasm_offset
        self.name = manifest["name"]
        self.version = manifest["version"]


def parse_header(head):
    """Parse the first bytes of a package (at least 12 + header_len)."""
    if len(head) < 12 or head[:8] != MAGIC:
        raise PackageError("not an aegis package (bad magic)")
    n = int.from_bytes(head[8:12], "big")
    if not 1 <= n <= HEADER_MAX:
        raise PackageError("package header length %d out of range" % n)
    if len(head) < 12 + n:
        raise PackageError("package truncated inside its header")
    try:
        h = cbor.loads(bytes(head[12:12 + n]))
    except cbor.CBORError as e:
        raise PackageError("package header: %s" % e)
    if type(h) is not dict:
        raise PackageError("package header is not a map")
    mb, sig, kid = h.get("manifest"), h.get("sig"), h.get("kid")
    if type(mb) is not bytes or type(sig) is not bytes or len(sig) != 64 \
            or type(kid) is not bytes or len(kid) != 8:
        raise PackageError("package header lacks manifest/sig/kid")
    try:
        m = cbor.loads(mb)
    except cbor.CBORError as e:
        raise PackageError("manifest: %s" % e)
    check_manifest(m)
    if cbor.dumps(m) != mb:
        raise PackageError("manifest bytes are not canonical CBOR")
    return Header(m, mb, sig, kid, 12 + n)


def verify_signature(hdr, verifiers):
    """`verifiers`: {kid: callable(sig, msg) -> bool} of trusted keys."""
    v = verifiers.get(hdr.kid)
    if v is None:
        raise PackageError("package signed by an unknown key (kid %s)"
                           % "".join("%02x" % b for b in hdr.kid))
    if not v(hdr.sig, hdr.manifest_bytes):
        raise PackageError("bad signature on package %s@%s" % (hdr.name, hdr.version))


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
