# CPython only: cbor.py's loads/dumps done by the fast Rust `cbor2`, with the
# same checks and errors as the pure codec (kept as cbor.pure_loads and
# cbor.pure_dumps).  Imported by cbor.py itself on CPython, so callers just
# use cbor.loads/cbor.dumps; a board never loads (or flashes) this file.
import os

import cbor2

from node.core import cbor

_PLAINS = frozenset((int, str, bytes, bool, float, type(None)))
_KEYS = frozenset((str, int, bytes))
# cbor2.loads ignores bytes after the first item, and its streaming decoder
# (which can tell) is ~2x slower.  So the input is decoded as the array
# [input, nonce]: anything trailing the item takes the nonce's place, and a
# random per-process nonce cannot be forged by a sender.
_NONCE = os.urandom(16)
_TAIL = b"\x50" + _NONCE
_MAX_DEPTH = 32 + 2     # cbor.py's nesting limit, plus the array around it
_CBORError = cbor.CBORError


def _check(obj):
    # cbor2 turns tags into datetimes, sets, etc.; the mesh takes none.
    t = type(obj)
    if t is dict:
        for k in obj:
            if type(k) not in _KEYS:
                raise _CBORError("map key must be text, int or bytes")
        items = obj.values()
    elif t is list:
        items = obj
    elif t in _PLAINS:
        return
    else:
        raise _CBORError("tags are not accepted (%s)" % t.__name__)
    for v in items:
        if type(v) not in _PLAINS:
            _check(v)


def loads(b):
    try:
        v = cbor2.loads(b"\x82" + b + _TAIL, max_depth=_MAX_DEPTH,
                        allow_duplicate_keys=False, allow_indefinite=False)
    except Exception as e:
        raise _CBORError("malformed CBOR: %s" % e)
    if type(v) is not list or len(v) != 2 or v[1] != _NONCE:
        raise _CBORError("trailing bytes after CBOR item" if b else "empty CBOR input")
    v = v[0]
    if type(v) not in _PLAINS:
        _check(v)
    return v


def dumps(obj):
    try:
        return cbor2.dumps(obj, canonical=True)
    except Exception as e:
        raise _CBORError("cannot encode: %s" % e)


cbor.pure_loads, cbor.pure_dumps = cbor.loads, cbor.dumps
cbor.loads, cbor.dumps = loads, dumps
