# Signed module packages: the layout, the manifest and the checks a node
# (gateway or board) makes before it accepts one.
#
# Layout of a package file (big-endian):
#   b"AEGISPK1" | u32 header_len | header | wasm
#   header = CBOR map {"manifest": canonical manifest bytes,
#                      "sig": Ed25519 signature over those bytes (64),
#                      "kid": key id = sha256(raw public key)[:8]}
# The wasm follows the header so a board can stream it from flash without
# holding it twice; manifest["sha256"] and ["size"] bind it to the signature.
# Verifying a signature is a callable handed in (cryptography on a gateway).
#
# Building packages and opening whole ones in memory (make_manifest, build,
# open_package, DEFAULT_LIMITS) live in node/core/pkgmake.py: a board
# verifies from flash and never loads them (every name a module holds is a
# qstr the board keeps for good).  package.make_manifest etc. still work,
# through the module __getattr__ at the end (PEP 562).
import hashlib

from node.core import cbor
from node.core.bus import check_filter, TopicError

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

MAGIC = b"AEGISPK1"
HEADER_MAX = 16384
_ABI = const(1)             # manifest "abi" this node runs (pkgmake.ABI_VERSION)
# The most fuel a call can have: wasm3's gas limit is an i32 counted in
# units of GAS_UNIT = 10000 fuel (node/core/metering.py).
_FUEL_MAX = const(0x7FFFFFFF * 10000)


class PackageError(ValueError):
    pass


def key_id(key):
    """A raw public key's id: the first 8 bytes of its sha256."""
    return hashlib.sha256(key).digest()[:8]


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
        try:
            n = int(p)
        except ValueError:
            n = -1
        if n < 0 or str(n) != p:    # plain ASCII digits, no sign or leading zero
            raise PackageError("version %r has a bad number %r" % (v, p))
        nums.append(n)
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
        if c not in "abcdefghijklmnopqrstuvwxyz0123456789_-":
            raise PackageError("module name %r: use a-z, 0-9, '_' and '-'" % name)


def check_manifest(m):
    """Validate a decoded manifest; returns it.  Raises PackageError."""
    if type(m) is not dict:
        raise PackageError("manifest is not a map")
    if m.get("abi") != _ABI:
        raise PackageError("manifest ABI %r not supported (this node: %d)"
                           % (m.get("abi"), _ABI))
    check_name(m.get("name"))
    parse_version(m.get("version"))
    h = m.get("sha256")
    if type(h) is not bytes or len(h) != 32:
        raise PackageError("manifest sha256 must be 32 bytes")
    size = m.get("size")
    if type(size) is not int or not 8 <= size <= (64 << 20):
        raise PackageError("manifest size %r out of range" % size)
    # Subscription filters, emit prefixes and port names: lists of text.
    for key in ("subscribe", "emit", "ports"):
        v = m.get(key, [])
        if type(v) is not list or len(v) > 64:
            raise PackageError("manifest %r must be a list of at most 64" % key)
        for x in v:
            if type(x) is not str:
                raise PackageError("manifest %r entries must be text" % key)
            try:
                if key == "subscribe":
                    check_filter(x)
                elif key == "emit":
                    if not x or len(x) > 255 or "+" in x or "#" in x:
                        raise TopicError("emit prefix %r must be 1..255 chars without wildcards"
                                         % x)
                elif not 1 <= len(x) <= 64:
                    raise TopicError("port name %r must be 1..64 characters" % x)
            except TopicError as e:
                raise PackageError("manifest %r: %s" % (key, e))
    lim = m.get("limits")
    if type(lim) is not dict:
        raise PackageError("manifest limits must be a map")
    for k in ("fuel", "memory_pages", "data_max", "state_max"):    # pkgmake.DEFAULT_LIMITS
        v = lim.get(k)
        if type(v) is not int or v < 0 or v > (1 << 40):
            raise PackageError("manifest limit %r must be a non-negative int" % k)
    if not 1 <= lim["memory_pages"] <= 65536:
        raise PackageError("limits.memory_pages must be 1..65536")
    if type(m.get("metered", False)) is not bool:
        raise PackageError("manifest metered must be a bool")
    if m.get("metered") and not 1 <= lim["fuel"] <= _FUEL_MAX:
        raise PackageError("a metered module needs limits.fuel 1..%d" % _FUEL_MAX)
    return m


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
        raise PackageError("package signed by an unknown key (kid %s)" % hdr.kid.hex())
    if not v(hdr.sig, hdr.manifest_bytes):
        raise PackageError("bad signature on package %s@%s" % (hdr.name, hdr.version))


def __getattr__(name):
    # The gateway's and CLI's part of this API (see the top of the file).
    from node.core import pkgmake
    return getattr(pkgmake, name)
