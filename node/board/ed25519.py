# Ed25519 signature *verification* (RFC 8032 section 5.1.7) in plain Python
# for boards: MicroPython ships neither Ed25519 nor SHA-512.  Only public
# data is handled (no secret, so constant time does not matter).  Checked
# against `cryptography` in tests/test_board_ed25519.py (RFC vectors and
# real package signatures, on CPython and on the MicroPython binary).
#
# Cost: one combined double-scalar multiplication (Straus: 253 doublings,
# ~190 additions) over 255-bit ints.  Measured on the Unix port: see
# docs/BOARDS.md; a package is verified once per install, not per event.
# Loaded for one check and unloaded after (node/board/deploy.py): private
# const() names and few functions keep its heap and qstrs small.
try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_P = const(2 ** 255 - 19)
L = 2 ** 252 + 27742317777372353535851937790883648493   # the group order
_D = const(37095705934669439343138083508754565189542113879843219016388785533085940283555)
# = -121665 / 121666 mod P
_SQRT_M1 = const(19681161376707505956807079304988542015446066515923890162744021073123829784752)
# = 2 ** ((P - 1) / 4) mod P
# The base point B (x, y, x*y mod P): y = 4/5 mod P, x its even root.
_BX = const(15112221349535400772501151409588531511454012693041857206046113283949847762202)
_BY = const(46316835694926478169428394003475163141307993866256225615783033603165251855960)
_BT = const(46827403850823179245072216630277197565144205554125654976674165829533817101731)
_M64 = const(0xFFFFFFFFFFFFFFFF)


def _frac_root(n, e):
    # First 64 bits of the fractional part of n ** (1/e): floor((n << 64e)
    # ** (1/e)) by Newton's method from above, starting at 2 ** 68, which
    # is above the root only for n < 256 (e 2) or n < 4096 (e 3): here
    # square roots of the first 8 primes, cube roots of the first 80.
    n <<= 64 * e
    x = 1 << 68
    while True:
        y = ((e - 1) * x + n // x ** (e - 1)) // e
        if y >= x:
            return x & _M64
        x = y


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def sha512(msg):
    # Round constants: the cube roots of the first 80 primes, computed (not
    # a table) to keep the .mpy small; once per call (one call per check).
    ps = []  # type: list[int]
    n = 2
    while len(ps) < 80:
        if all(n % p for p in ps if p * p <= n):
            ps.append(n)
        n += 1
    k = [_frac_root(p, 3) for p in ps]
    h = [_frac_root(p, 2) for p in ps[:8]]
    ln = len(msg)
    msg = bytes(msg) + b"\x80" + bytes((111 - ln) % 128) + (ln * 8).to_bytes(16, "big")
    for off in range(0, len(msg), 128):
        w = [int.from_bytes(msg[off + 8 * i:off + 8 * i + 8], "big") for i in range(16)]
        for i in range(16, 80):
            a, b = w[i - 15], w[i - 2]
            s0 = _rotr(a, 1) ^ _rotr(a, 8) ^ (a >> 7)
            s1 = _rotr(b, 19) ^ _rotr(b, 61) ^ (b >> 6)
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & _M64)
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            t1 = (hh + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41))
                  + ((e & f) ^ (~e & g)) + k[i] + w[i]) & _M64
            t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39))
                  + ((a & b) ^ (a & c) ^ (b & c))) & _M64
            a, b, c, d, e, f, g, hh = (t1 + t2) & _M64, a, b, c, (d + t1) & _M64, e, f, g
        h = [(x + y) & _M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]
    return b"".join(x.to_bytes(8, "big") for x in h)


def _add(s, t):
    # Points s + t in extended twisted Edwards coordinates (X, Y, Z, T),
    # RFC 8032 5.1.4.
    x1, y1, z1, t1 = s
    x2, y2, z2, t2 = t
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decode(s):
    """Point from its 32-byte encoding, or None when it is not on the curve."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            return None
        x = 0
    else:
        x = pow(x2, (_P + 3) // 8, _P)
        if (x * x - x2) % _P:
            x = x * _SQRT_M1 % _P
        if (x * x - x2) % _P:
            return None
        if x & 1 != sign:
            x = _P - x
    return (x, y, 1, x * y % _P)


def verify(key, msg, sig, feed=None):
    """True when sig (64 bytes) is the Ed25519 signature of msg by the
    public key `key` (32 bytes).  `feed()` is called every few steps:
    seconds on a Cortex-M0+ must not starve the hardware watchdog."""
    if len(sig) != 64 or len(key) != 32:
        return False
    a = _decode(bytes(key))
    r = bytes(sig[:32])
    s = int.from_bytes(sig[32:], "little")
    if a is None or s >= L or _decode(r) is None:
        return False
    h = int.from_bytes(sha512(r + bytes(key) + bytes(msg)), "little") % L
    # [s]B - [h]A, both scalars in one pass (Straus), compared with R.
    b = (_BX, _BY, 1, _BT)
    na = ((_P - a[0]) % _P, a[1], a[2], (_P - a[3]) % _P)
    both = _add(b, na)
    q = (0, 1, 1, 0)
    for i in range(252, -1, -1):       # s, h < L < 2**253
        if feed is not None and not i & 15:
            feed()
        q = _add(q, q)
        bs, bh = (s >> i) & 1, (h >> i) & 1
        if bs and bh:
            q = _add(q, both)
        elif bs:
            q = _add(q, b)
        elif bh:
            q = _add(q, na)
    # Encode q (x, y from X/Z, Y/Z) and compare with R's bytes.
    zi = pow(q[2], _P - 2, _P)
    x, y = q[0] * zi % _P, q[1] * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little") == r
