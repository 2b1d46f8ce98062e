# CBOR (RFC 8949) for the core, safe on hostile input.
#
# On CPython the fast Rust `cbor2` does the work.  MicroPython has no CBOR in
# any package registry we can ship from (micropython-lib's port is only on
# its mip index), so a small pure codec below covers the subset the mesh
# uses: ints, bytes, text, arrays, maps, bool, None and floats (decode).
# `dumps(obj)` is deterministic (RFC 7049 canonical: shortest heads, map keys
# sorted by encoded length then bytes), byte-identical to
# `cbor2.dumps(obj, canonical=True)` for that subset; signatures rely on it.
try:
    import struct
except ImportError:  # pragma: no cover
    import ustruct as struct

MAX_DEPTH = 32
MAX_ITEMS = 1 << 16


class CBORError(ValueError):
    pass


def _head(major, n):
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + struct.pack(">H", n)
    if n < 0x100000000:
        return bytes((m | 26,)) + struct.pack(">I", n)
    if n < 0x10000000000000000:
        return bytes((m | 27,)) + struct.pack(">Q", n)
    raise CBORError("integer too large for CBOR")


def _enc(obj, out, depth):
    if depth > MAX_DEPTH:
        raise CBORError("nesting too deep")
    t = type(obj)
    if obj is None:
        out.append(b"\xf6")
    elif obj is True:
        out.append(b"\xf5")
    elif obj is False:
        out.append(b"\xf4")
    elif t is int:
        out.append(_head(0, obj) if obj >= 0 else _head(1, -1 - obj))
    elif t is bytes or t is bytearray or t is memoryview:
        out.append(_head(2, len(obj)))
        out.append(bytes(obj))
    elif t is str:
        b = obj.encode()
        out.append(_head(3, len(b)))
        out.append(b)
    elif t is list or t is tuple:
        out.append(_head(4, len(obj)))
        for x in obj:
            _enc(x, out, depth + 1)
    elif t is dict:
        items = []
        for k, v in obj.items():
            kb = []
            _enc(k, kb, depth + 1)
            items.append((b"".join(kb), v))
        items.sort(key=lambda kv: (len(kv[0]), kv[0]))
        out.append(_head(5, len(items)))
        for kb, v in items:
            out.append(kb)
            _enc(v, out, depth + 1)
    elif t is float:
        out.append(b"\xfb" + struct.pack(">d", obj))
    else:
        raise CBORError("cannot encode %s" % t.__name__)


def pure_dumps(obj):
    out = []
    _enc(obj, out, 0)
    return b"".join(out)


def _uint(b, i, ai):
    if ai < 24:
        return ai, i
    if ai == 24:
        n = 1
    elif ai == 25:
        n = 2
    elif ai == 26:
        n = 4
    elif ai == 27:
        n = 8
    else:
        raise CBORError("indefinite or reserved length not supported")
    if i + n > len(b):
        raise CBORError("truncated")
    v = 0
    for j in range(i, i + n):
        v = (v << 8) | b[j]
    return v, i + n


def _half(h):
    e = (h >> 10) & 0x1F
    f = h & 0x3FF
    if e == 0:
        v = f * 2.0 ** -24
    elif e == 31:
        v = float("inf") if f == 0 else float("nan")
    else:
        v = (f + 1024) * 2.0 ** (e - 25)
    return -v if h & 0x8000 else v


def _dec(b, i, depth):
    if depth > MAX_DEPTH:
        raise CBORError("nesting too deep")
    if i >= len(b):
        raise CBORError("truncated")
    ib = b[i]
    major = ib >> 5
    ai = ib & 31
    i += 1
    if major == 7:
        if ai == 20:
            return False, i
        if ai == 21:
            return True, i
        if ai == 22:
            return None, i
        if ai in (25, 26, 27):
            n = (2, 4, 8)[ai - 25]
            if i + n > len(b):
                raise CBORError("truncated")
            raw = bytes(b[i:i + n])
            if ai == 25:
                v = _half(struct.unpack(">H", raw)[0])
            else:
                v = struct.unpack(">f" if ai == 26 else ">d", raw)[0]
            return v, i + n
        raise CBORError("unsupported simple value %d" % ai)
    n, i = _uint(b, i, ai)
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major == 2 or major == 3:
        if i + n > len(b):
            raise CBORError("truncated")
        v = bytes(b[i:i + n])
        if major == 3:
            try:
                v = v.decode()
            except Exception:
                raise CBORError("invalid UTF-8 in text string")
        return v, i + n
    if n > MAX_ITEMS or n > len(b) - i:
        raise CBORError("container larger than its data")
    if major == 4:
        out = []
        for _ in range(n):
            v, i = _dec(b, i, depth + 1)
            out.append(v)
        return out, i
    if major == 5:
        out = {}
        for _ in range(n):
            k, i = _dec(b, i, depth + 1)
            if type(k) not in (str, int, bytes):
                raise CBORError("map key must be text, int or bytes")
            v, i = _dec(b, i, depth + 1)
            if k in out:
                raise CBORError("duplicate map key")
            out[k] = v
        return out, i
    raise CBORError("tags are not accepted")


def pure_loads(b):
    try:
        v, i = _dec(b, 0, 0)
    except CBORError:
        raise
    except Exception as e:  # any slip in a hostile buffer is a decode error
        raise CBORError("malformed CBOR: %r" % e)
    if i != len(b):
        raise CBORError("trailing bytes after CBOR item")
    return v


try:
    import cbor2 as _cbor2
    import os as _os  # CPython only: urandom for the nonce below

    _PLAIN = (int, str, bytes, bool, float, type(None))
    _KEYS = (str, int, bytes)
    # cbor2.loads ignores bytes after the first item, and its streaming
    # decoder (which can tell) is ~2x slower.  So the input is decoded as the
    # array [input, nonce]: anything trailing the item takes the nonce's
    # place, and a random per-process nonce cannot be forged by a sender.
    _NONCE = _os.urandom(16)
    _TAIL = b"\x50" + _NONCE

    _PLAINS = frozenset(_PLAIN)
    _KEYSET = frozenset(_KEYS)

    def _check(obj, depth):
        # cbor2 turns tags into datetimes, sets, etc.; the mesh takes none.
        t = type(obj)
        if t is dict:
            for k in obj:
                if type(k) not in _KEYSET:
                    raise CBORError("map key must be text, int or bytes")
            items = obj.values()
        elif t is list:
            items = obj
        elif t in _PLAINS:
            return
        else:
            raise CBORError("tags are not accepted (%s)" % t.__name__)
        for v in items:
            if type(v) not in _PLAINS:
                _check(v, depth + 1)

    def loads(b):
        try:
            v = _cbor2.loads(b"\x82" + b + _TAIL, max_depth=MAX_DEPTH + 2,
                             allow_duplicate_keys=False, allow_indefinite=False)
        except Exception as e:
            raise CBORError("malformed CBOR: %s" % e)
        if type(v) is not list or len(v) != 2 or v[1] != _NONCE:
            raise CBORError("trailing bytes after CBOR item" if b else "empty CBOR input")
        v = v[0]
        if type(v) not in _PLAINS:
            _check(v, 0)
        return v

    def dumps(obj):
        try:
            return _cbor2.dumps(obj, canonical=True)
        except Exception as e:
            raise CBORError("cannot encode: %s" % e)

    HAVE_CBOR2 = True
except ImportError:
    loads = pure_loads
    dumps = pure_dumps
    HAVE_CBOR2 = False
