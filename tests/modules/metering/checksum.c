// Loop-heavy: fill a buffer with a pseudo-random pattern, then checksum it.
#define EXPORT(n) __attribute__((export_name(n)))
static unsigned char buf[65536];

EXPORT("checksum") unsigned checksum(unsigned n, unsigned seed) {
    if (n > sizeof buf) n = sizeof buf;
    unsigned x = seed | 1;
    for (unsigned i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        buf[i] = (unsigned char)x;
    }
    unsigned a = 1, b = 0;
    for (unsigned round = 0; round < 3; round++)
        for (unsigned i = 0; i < n; i++) {
            a = (a + buf[i]) % 65521;
            b = (b + a) % 65521;
        }
    return (b << 16) | a;
}
