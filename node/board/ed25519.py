# Ed25519 signature *verification* (RFC 8032 section 5.1.7) in plain Python
# for boards: MicroPython ships neither Ed25519 nor SHA-512.  Only public
# data is handled (no secret, so constant time does not matter).  Checked
# against `cryptography` in tests/test_board_ed25519.py (RFC vectors and
# real package signatures, on CPython and on the MicroPython binary).
#
# Cost: one combined double-scalar multiplication (Straus: 253 doublings,
# ~190 additions) over 255-bit ints.  Measured on the Unix port: see
# docs/BOARDS.md; a package is verified once per install, not per event.
P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
_K = None       # SHA-512 round constants, built on first use
_M64 = 0xFFFFFFFFFFFFFFFF


def _consts():
    # First 64 bits of the fractional parts of the cube roots of the first
    # 80 primes, computed (not a table) to keep the .mpy small.
    global _K
    if _K is None:
        ps = []  # type: list[int]
        n = 2
        while len(ps) < 80:
            if all(n % q for q in ps if q * q <= n):
                ps.append(n)
            n += 1
        _K = [_frac_root(q, 3) for q in ps]
    return _K


def _iroot(n, k):
    # floor(n ** (1/k)) for big ints, by Newton's method.
    bits = (len("%x" % n) * 4)  # MicroPython ints have no bit_length()
    x = 1 << ((bits + k - 1) // k)
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x
        x = y


def _frac_root(q, k):
    return _iroot(q << (64 * k), k) & _M64


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def sha512(msg):
    k = _consts()
    h = [_frac_root(q, 2) for q in (2, 3, 5, 7, 11, 13, 17, 19)]
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


def _add(p1, p2):
    # Extended twisted Edwards coordinates (X, Y, Z, T), RFC 8032 5.1.4.
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _decode(s):
    """Point from its 32-byte encoding, or None when it is not on the curve."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        if sign:
            return None
        x = 0
    else:
        x = pow(x2, (P + 3) // 8, P)
        if (x * x - x2) % P:
            x = x * SQRT_M1 % P
        if (x * x - x2) % P:
            return None
        if x & 1 != sign:
            x = P - x
    return (x, y, 1, x * y % P)


def _encode(pt):
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_GY = 4 * pow(5, P - 2, P) % P
_B = None


def verify(pub, msg, sig, feed=None):
    """True when sig (64 bytes) is pub's (32 bytes) Ed25519 signature of msg.
    `feed()` is called every few steps: seconds on a Cortex-M0+ must not
    starve the hardware watchdog."""
    global _B
    if len(sig) != 64 or len(pub) != 32:
        return False
    a = _decode(bytes(pub))
    r = bytes(sig[:32])
    s = int.from_bytes(sig[32:], "little")
    if a is None or s >= L or _decode(r) is None:
        return False
    if _B is None:
        _B = _decode(_GY.to_bytes(32, "little"))
    h = int.from_bytes(sha512(r + bytes(pub) + bytes(msg)), "little") % L
    # [s]B - [h]A, both scalars in one pass (Straus), compared with R.
    na = ((P - a[0]) % P, a[1], a[2], (P - a[3]) % P)
    both = _add(_B, na)
    q = (0, 1, 1, 0)
    for i in range(252, -1, -1):       # s, h < L < 2**253
        if feed is not None and not i & 15:
            feed()
        q = _add(q, q)
        bs, bh = (s >> i) & 1, (h >> i) & 1
        if bs and bh:
            q = _add(q, both)
        elif bs:
            q = _add(q, _B)
        elif bh:
            q = _add(q, na)
    return _encode(q) == r
