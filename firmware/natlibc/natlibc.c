// The C library wasm3 needs, for a MicroPython native module.
//
// A natmod links against nothing but mp_fun_table: allocation goes to the
// GC heap (so wasm3's memory is visible to, and kept alive by, the GC),
// memory copies to the firmware's, formatting to mp_vprintf.  The math is
// plain bit-level C so soft-float targets need only libgcc's arithmetic;
// sqrt is correctly rounded (bit by bit, as in fdlibm) as wasm requires.
//
// Compiled with -fno-builtin -fno-tree-loop-distribute-patterns so the
// compiler does not turn these bodies back into calls to themselves.
#include "py/dynruntime.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* ---- memory ---- */

void *malloc(size_t n) {
    return mp_fun_table.realloc_(NULL, n ? n : 1, false);
}

void *calloc(size_t n, size_t size) {
    size_t total = n * size;
    if (size && total / size != n) {
        return NULL;
    }
    void *p = malloc(total);
    if (p) {
        // gc_alloc zeroes only the tail of the last block, not the whole block.
        mp_fun_table.memset_(p, 0, total);
    }
    return p;
}

// A moved block is freed, as by libc: a bytearray over linear memory taken
// before a memory.grow is stale afterwards (as pywasm3's memoryview is), so
// the host re-fetches memory on every call (node/core/abi.py does).
void *realloc(void *p, size_t n) {
    return mp_fun_table.realloc_(p, n ? n : 1, true);
}

void free(void *p) {
    if (p) {
        mp_fun_table.realloc_(p, 0, false);
    }
}

void *memcpy(void *dst, const void *src, size_t n) {
    return mp_fun_table.memmove_(dst, src, n);
}

void *memmove(void *dst, const void *src, size_t n) {
    return mp_fun_table.memmove_(dst, src, n);
}

void *memset(void *s, int c, size_t n) {
    return mp_fun_table.memset_(s, c, n);
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y) {
            return *x - *y;
        }
    }
    return 0;
}

size_t strlen(const char *s) {
    const char *p = s;
    while (*p) {
        p++;
    }
    return p - s;
}

int strncmp(const char *a, const char *b, size_t n) {
    for (; n; n--, a++, b++) {
        if (*a != *b || !*a) {
            return (unsigned char)*a - (unsigned char)*b;
        }
    }
    return 0;
}

int strcmp(const char *a, const char *b) {
    return strncmp(a, b, (size_t)-1);
}

char *strchr(const char *s, int c) {
    for (;; s++) {
        if (*s == (char)c) {
            return (char *)s;
        }
        if (!*s) {
            return NULL;
        }
    }
}

MP_NORETURN void abort(void) {
    mp_fun_table.raise_msg(mp_fun_table.load_global(MP_QSTR_RuntimeError), "wasm3: abort");
}

/* ---- formatting (wasm3's error messages) ---- */

typedef struct { char *buf; size_t cap, len; } sbuf_t;

static void sbuf_strn(void *data, const char *str, size_t len) {
    sbuf_t *b = data;
    for (size_t i = 0; i < len; i++, b->len++) {
        if (b->len + 1 < b->cap) {
            b->buf[b->len] = str[i];
        }
    }
}

int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap) {
    sbuf_t b = { buf, n, 0 };
    mp_print_t pr = { &b, sbuf_strn };
    mp_fun_table.vprintf_(&pr, fmt, ap);
    if (n) {
        buf[b.len < n ? b.len : n - 1] = 0;
    }
    return (int)b.len;
}

int snprintf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- math ---- */

typedef union { double d; uint64_t u; } dbits;
typedef union { float f; uint32_t u; } fbits;

double fabs(double x) { dbits b = { x }; b.u &= ~(1ULL << 63); return b.d; }
float fabsf(float x) { fbits b = { x }; b.u &= ~(1U << 31); return b.f; }

double copysign(double x, double y) {
    dbits a = { x }, b = { y };
    a.u = (a.u & ~(1ULL << 63)) | (b.u & (1ULL << 63));
    return a.d;
}

float copysignf(float x, float y) {
    fbits a = { x }, b = { y };
    a.u = (a.u & ~(1U << 31)) | (b.u & (1U << 31));
    return a.f;
}

double trunc(double x) {
    dbits b = { x };
    int e = (int)((b.u >> 52) & 0x7ff) - 1023;
    if (e >= 52) {
        return e == 1024 ? x + x : x;   // NaN is quieted, like libm
    }
    if (e < 0) {
        b.u &= 1ULL << 63;
        return b.d;
    }
    b.u &= ~((1ULL << (52 - e)) - 1);
    return b.d;
}

float truncf(float x) {
    fbits b = { x };
    int e = (int)((b.u >> 23) & 0xff) - 127;
    if (e >= 23) {
        return e == 128 ? x + x : x;
    }
    if (e < 0) {
        b.u &= 1U << 31;
        return b.f;
    }
    b.u &= ~((1U << (23 - e)) - 1);
    return b.f;
}

double floor(double x) { double t = trunc(x); return (x < 0 && t != x) ? t - 1.0 : t; }
float floorf(float x) { float t = truncf(x); return (x < 0 && t != x) ? t - 1.0f : t; }
double ceil(double x) { double t = trunc(x); return (x > 0 && t != x) ? t + 1.0 : t; }
float ceilf(float x) { float t = truncf(x); return (x > 0 && t != x) ? t + 1.0f : t; }

// Round half to even: adding and removing 2^52 rounds in the FPU (or
// libgcc) to nearest-even; the sign is put back so rint(-0.3) is -0.0.
double rint(double x) {
    volatile double big = 4503599627370496.0;
    double a = fabs(x);
    if (!(a < big)) {
        return x + 0.0;
    }
    double r = (a + big) - big;
    return copysign(r, x);
}

float rintf(float x) {
    volatile float big = 8388608.0f;
    float a = fabsf(x);
    if (!(a < big)) {
        return x + 0.0f;
    }
    float r = (a + big) - big;
    return copysignf(r, x);
}

double nearbyint(double x) { return rint(x); }
float nearbyintf(float x) { return rintf(x); }

double fmin(double a, double b) { return a != a ? b : (b != b ? a : (a < b ? a : b)); }
float fminf(float a, float b) { return a != a ? b : (b != b ? a : (a < b ? a : b)); }
double fmax(double a, double b) { return a != a ? b : (b != b ? a : (a > b ? a : b)); }
float fmaxf(float a, float b) { return a != a ? b : (b != b ? a : (a > b ? a : b)); }

double sqrt(double x) {
    dbits b = { x };
    uint64_t sign = b.u >> 63;
    int e = (int)((b.u >> 52) & 0x7ff);
    uint64_t m = b.u & ((1ULL << 52) - 1);
    if (e == 0x7ff) {
        return sign && !m ? (x - x) / (x - x) : x + x;     // -inf -> NaN; NaN, +inf
    }
    if (e == 0 && m == 0) {
        return x;                                           // +-0
    }
    if (sign) {
        return (x - x) / (x - x);                           // NaN
    }
    if (e == 0) {                                           // subnormal: normalise
        e = 1;
        while (!(m & (1ULL << 52))) {
            m <<= 1;
            e--;
        }
    } else {
        m |= 1ULL << 52;
    }
    e -= 1023;
    if (e & 1) {
        m += m;
    }
    e >>= 1;                                                // floor(e / 2)
    // One result bit per turn; q keeps one bit more than the result for rounding.
    m += m;
    uint64_t q = 0, s = 0, r = 1ULL << 53;
    while (r) {
        uint64_t t = s + r;
        if (t <= m) {
            s = t + r;
            m -= t;
            q += r;
        }
        m += m;
        r >>= 1;
    }
    if (m) {
        q += q & 1;                                         // never a tie for sqrt
    }
    b.u = ((uint64_t)(e + 1022) << 52) + (q >> 1);
    return b.d;
}

// Correctly rounded: sqrt in double then one rounding to float is exact
// enough (53 >= 2 * 24 + 2 bits).
float sqrtf(float x) {
    return (float)sqrt((double)x);
}

/* ---- compiler helpers x64 gets no libgcc for ---- */

#if defined(__x86_64__)
int __popcountdi2(unsigned long long x) {
    int n = 0;
    for (; x; x &= x - 1) {
        n++;
    }
    return n;
}
#endif
