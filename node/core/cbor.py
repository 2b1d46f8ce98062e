# CBOR (RFC 8949) for the core, safe on hostile input.
#
# MicroPython has no CBOR in any package registry we can ship from
# (micropython-lib's port is only on its mip index), so this small pure codec
# covers the subset the mesh uses: ints, bytes, text, arrays, maps, bool,
# None and floats.  `dumps(obj)` is deterministic (RFC 7049 canonical:
# shortest heads, map keys sorted by encoded length then bytes),
# byte-identical to `cbor2.dumps(obj, canonical=True)` for that subset but
# floats (always 8 bytes here; cbor2 shortens them);
# signatures rely on it.  On CPython cbor_fast.py swaps in the fast Rust
# `cbor2` for loads/dumps (keeping these as pure_loads/pure_dumps), so none
# of its code or names cost a board's heap.
#
# Board heap (docs/BOARDS.md "Heap budget"): every name here is a qstr the board
# keeps for good and every long string or bytes constant a heap object, so
# helpers are few and argument names are ones MicroPython already has.
import struct
import sys

try:
    from micropython import const
except ImportError:  # CPython: const(n) is n, as int(n) is (no def: a def costs boards heap)
    const = int

_MAX_DEPTH = const(32)          # nesting of arrays and maps
_MAX_ITEMS = const(65536)       # elements of one array or map


class CBORError(ValueError):
    pass


def _head(t, n):
    # Major type t with argument n in its shortest form: n itself below 24,
    # else additional info 24 + k and n in the next 1 << k bytes.
    t <<= 5
    if n < 24:
        return bytes((t | n,))
    k = 0
    while n >> (8 << k):
        k += 1
        if k > 3:
            raise CBORError("integer too large for CBOR")
    return bytes((t | 24 + k,)) + n.to_bytes(1 << k, "big")


def _enc(v, buf, n):
    # Appends v's encoding to the list buf; n is the nesting depth.
    if n > _MAX_DEPTH:
        raise CBORError("nesting too deep")
    t = type(v)
    if v is None or t is bool:
        buf.append(bytes((0xF6 if v is None else 0xF4 + v,)))     # null, false, true
    elif t is int:
        buf.append(_head(0, v) if v >= 0 else _head(1, -1 - v))
    elif t is bytes or t is bytearray or t is memoryview:
        buf.append(_head(2, len(v)))
        buf.append(bytes(v))
    elif t is str:
        v = v.encode()
        buf.append(_head(3, len(v)))
        buf.append(v)
    elif t is list or t is tuple:
        buf.append(_head(4, len(v)))
        for x in v:
            _enc(x, buf, n + 1)
    elif t is dict:
        items = []
        for k, x in v.items():
            kb = []
            _enc(k, kb, n + 1)
            kb = b"".join(kb)
            items.append((len(kb), kb, x))
        # Canonical order: encoded length, then bytes.  Distinct keys encode
        # distinctly, so the values are never compared.
        items.sort()
        buf.append(_head(5, len(items)))
        for _, kb, x in items:
            buf.append(kb)
            _enc(x, buf, n + 1)
    elif t is float:
        buf.append(bytes((0xFB,)) + struct.pack(">d", v))
    else:
        raise CBORError("cannot encode %s" % t.__name__)


def dumps(v):
    buf = []
    _enc(v, buf, 0)
    return b"".join(buf)


def _dec(data, pos, n):
    # (item at data[pos], position after it); n is the nesting depth.
    if n > _MAX_DEPTH:
        raise CBORError("nesting too deep")
    if pos >= len(data):
        raise CBORError("truncated")
    t = data[pos] >> 5
    v = data[pos] & 31          # additional info
    pos += 1
    if v > 27:
        raise CBORError("indefinite or reserved length not supported")
    if v < 24:
        raw = v
    else:                       # argument in the next 1, 2, 4 or 8 bytes
        k = 1 << (v - 24)
        if pos + k > len(data):
            raise CBORError("truncated")
        raw = int.from_bytes(data[pos:pos + k], "big")
        pos += k
    if t == 7:
        if v == 27 or v == 26:
            return struct.unpack(">d" if v == 27 else ">f", data[pos - k:pos])[0], pos
        if v == 25:             # half float: sign, 5-bit exponent, 10-bit fraction
            k = (raw >> 10) & 31
            v = raw & 1023
            if k == 31:
                v = float("nan") if v else float("inf")
            elif k:
                v = (v + 1024) * 2.0 ** (k - 25)
            else:
                v = v * 2.0 ** -24
            return -v if raw & 0x8000 else v, pos
        if 20 <= v <= 22:       # false, true, null
            return None if v == 22 else v == 21, pos
        raise CBORError("unsupported simple value %d" % raw)
    if t == 0:
        return raw, pos
    if t == 1:
        return -1 - raw, pos
    if t < 4:                   # 2 bytes, 3 text
        k = pos + raw
        if k > len(data):
            raise CBORError("truncated")
        v = bytes(data[pos:k])
        if t == 3:
            try:
                v = v.decode()
            except Exception:
                raise CBORError("invalid UTF-8 in text string")
        return v, k
    if t == 6:
        raise CBORError("tags are not accepted")
    if raw > _MAX_ITEMS or raw > len(data) - pos:
        raise CBORError("container larger than its data")
    if t == 4:
        v = []
        for _ in range(raw):
            x, pos = _dec(data, pos, n + 1)
            v.append(x)
        return v, pos
    v = {}
    for _ in range(raw):
        k, pos = _dec(data, pos, n + 1)
        t = type(k)
        if t is not str and t is not int and t is not bytes:
            raise CBORError("map key must be text, int or bytes")
        x, pos = _dec(data, pos, n + 1)
        if k in v:
            raise CBORError("duplicate map key")
        v[k] = x
    return v, pos


def loads(data):
    try:
        v, pos = _dec(data, 0, 0)
    except CBORError:
        raise
    except Exception as e:  # any slip in a hostile buffer is a decode error
        raise CBORError("malformed CBOR: %r" % e)
    if pos != len(data):
        raise CBORError("trailing bytes after CBOR item")
    return v


if sys.implementation.name != "micropython":
    # CPython: cbor_fast.py replaces loads/dumps with cbor2 (when installed).
    try:
        from node.core import cbor_fast  # noqa: F401
    except ImportError:     # no cbor2: the pure codec serves
        pass
