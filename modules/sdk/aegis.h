/*
 * aegis.h -- header-only C SDK for aegis-edge modules, ABI version 1.
 *
 * The full contract is docs/ABI.md.  This header declares the host imports
 * (wasm module "aegis"), the error codes, an export macro and a few small
 * helpers that work without libc (strlen, CBOR encode/decode of the items a
 * module typically needs).
 *
 * Build (no libc, no entry point):
 *   clang --target=wasm32 -nostdlib -O2 -Wl,--no-entry -I modules/sdk \
 *         -o mod.wasm mod.c
 *
 * Only the imports a module actually calls end up in its wasm import
 * section (an unused declaration costs nothing).
 *
 * Note: there is no libc.  Avoid code the compiler lowers to memcpy/memset
 * calls (large struct copies, zeroing big local arrays); use the aegis_copy /
 * aegis_fill helpers below instead.
 */
#ifndef AEGIS_H
#define AEGIS_H

#include <stdint.h> /* freestanding: provided by the compiler */
#include <stddef.h>

#define AEGIS_ABI_VERSION 1

/* ---- error codes (returned by host functions, negative) ---------------- */
#define AEGIS_OK 0
#define AEGIS_ENOENT (-1) /* no such state key / port not bound on this node */
#define AEGIS_EPERM (-2)  /* not granted by the signed manifest */
#define AEGIS_EINVAL (-3) /* pointer/length outside memory, malformed topic */
#define AEGIS_E2BIG (-4)  /* too large / over quota */
#define AEGIS_EIO (-5)    /* adapter failed */
#define AEGIS_ELIMIT (-6) /* rate or re-entrancy limit */

/* ---- limits ------------------------------------------------------------- */
#define AEGIS_TOPIC_MAX 255     /* bytes */
#define AEGIS_DATA_MAX 65536    /* default per-event data limit (manifest) */
#define AEGIS_LOG_MAX 1024      /* host truncates log text beyond this */
#define AEGIS_KEY_MAX 128       /* state key bytes */
#define AEGIS_VALUE_MAX 16384   /* state value bytes */

/* log levels */
#define AEGIS_DEBUG 0
#define AEGIS_INFO 1
#define AEGIS_WARN 2
#define AEGIS_ERROR 3

/* ---- exports ------------------------------------------------------------ */
/* AEGIS_EXPORT(aegis_event) int32_t aegis_event(...) { ... } */
#define AEGIS_EXPORT(name) __attribute__((export_name(#name), used))

/* ---- imports (module "aegis") ------------------------------------------- */
#define AEGIS_IMPORT(name) \
    __attribute__((import_module("aegis"), import_name(#name)))

/* Publish an event.  0 ok, negative AEGIS_E*. */
AEGIS_IMPORT(emit)
int32_t aegis_emit(const void *topic, int32_t topic_len, const void *data,
                   int32_t data_len);

/* Log a UTF-8 message at level 0..3 (truncated by the host at 1024 bytes). */
AEGIS_IMPORT(log)
void aegis_log(int32_t level, const void *text, int32_t len);

/* Wall-clock milliseconds since the Unix epoch. */
AEGIS_IMPORT(now_ms)
int64_t aegis_now_ms(void);

/* Value length, or AEGIS_ENOENT.  Copies only when length <= cap. */
AEGIS_IMPORT(state_get)
int32_t aegis_state_get(const void *key, int32_t key_len, void *buf,
                        int32_t cap);

/* 0 ok, negative error.  val_len < 0 deletes the key. */
AEGIS_IMPORT(state_set)
int32_t aegis_state_set(const void *key, int32_t key_len, const void *val,
                        int32_t val_len);

/* Call a granted port.  Output length, or negative error; copies the output
 * only when it fits in out_cap. */
AEGIS_IMPORT(call)
int32_t aegis_call(const void *port, int32_t port_len, const void *in,
                   int32_t in_len, void *out, int32_t out_cap);

/* ---- small helpers (no libc) -------------------------------------------- */

static inline int32_t aegis_strlen(const char *s) {
    int32_t n = 0;
    while (s[n])
        n++;
    return n;
}

static inline void aegis_copy(void *dst, const void *src, int32_t n) {
    volatile uint8_t *d = (volatile uint8_t *)dst; /* volatile: keeps clang */
    const uint8_t *s = (const uint8_t *)src;       /* from emitting memcpy() */
    for (int32_t i = 0; i < n; i++)
        d[i] = s[i];
}

static inline void aegis_fill(void *dst, uint8_t v, int32_t n) {
    volatile uint8_t *d = (volatile uint8_t *)dst;
    for (int32_t i = 0; i < n; i++)
        d[i] = v;
}

static inline int aegis_memeq(const void *a, const void *b, int32_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (int32_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}

/* Log a NUL-terminated string. */
static inline void aegis_logs(int32_t level, const char *s) {
    aegis_log(level, s, aegis_strlen(s));
}

/* Little-endian 8-byte (de)serialisation, for state values. */
static inline void aegis_put_u64le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t aegis_get_u64le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t aegis_f64_bits(double d) {
    union { double d; uint64_t u; } x;
    x.d = d;
    return x.u;
}

static inline double aegis_bits_f64(uint64_t u) {
    union { double d; uint64_t u; } x;
    x.u = u;
    return x.d;
}

/* ---- CBOR encoder (RFC 8949) --------------------------------------------
 * Each function writes one item head (plus payload for double) at p and
 * returns the number of bytes written, or 0 when it would not fit in cap.
 * Heads use the shortest form (deterministic encoding).
 */
#define AEGIS_CBOR_UINT 0
#define AEGIS_CBOR_NEGINT 1
#define AEGIS_CBOR_BYTES 2
#define AEGIS_CBOR_TEXT 3
#define AEGIS_CBOR_ARRAY 4
#define AEGIS_CBOR_MAP 5

static inline int32_t aegis_cbor_head(uint8_t *p, int32_t cap, int major,
                                      uint64_t n) {
    uint8_t m = (uint8_t)(major << 5);
    int32_t extra;
    uint8_t ai;
    if (n < 24) {
        if (cap < 1)
            return 0;
        p[0] = (uint8_t)(m | n);
        return 1;
    }
    if (n <= 0xff) {
        extra = 1; ai = 24;
    } else if (n <= 0xffff) {
        extra = 2; ai = 25;
    } else if (n <= 0xffffffffu) {
        extra = 4; ai = 26;
    } else {
        extra = 8; ai = 27;
    }
    if (cap < 1 + extra)
        return 0;
    p[0] = (uint8_t)(m | ai);
    for (int32_t i = 0; i < extra; i++) /* big-endian */
        p[1 + i] = (uint8_t)(n >> (8 * (extra - 1 - i)));
    return 1 + extra;
}

static inline int32_t aegis_cbor_uint(uint8_t *p, int32_t cap, uint64_t v) {
    return aegis_cbor_head(p, cap, AEGIS_CBOR_UINT, v);
}

/* Any signed integer: uint for v >= 0, negint (-1 - n) otherwise. */
static inline int32_t aegis_cbor_int(uint8_t *p, int32_t cap, int64_t v) {
    if (v >= 0)
        return aegis_cbor_head(p, cap, AEGIS_CBOR_UINT, (uint64_t)v);
    return aegis_cbor_head(p, cap, AEGIS_CBOR_NEGINT, (uint64_t)(-1 - v));
}

/* Always a float64 (major 7, ai 27). */
static inline int32_t aegis_cbor_double(uint8_t *p, int32_t cap, double d) {
    if (cap < 9)
        return 0;
    uint64_t u = aegis_f64_bits(d);
    p[0] = 0xfb;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    return 9;
}

/* Text / byte string head followed by the bytes themselves. */
static inline int32_t aegis_cbor_str(uint8_t *p, int32_t cap, int major,
                                     const void *s, int32_t len) {
    int32_t h = aegis_cbor_head(p, cap, major, (uint64_t)len);
    if (h == 0 || len < 0 || cap - h < len)
        return 0;
    aegis_copy(p + h, s, len);
    return h + len;
}

static inline int32_t aegis_cbor_text(uint8_t *p, int32_t cap, const char *s,
                                      int32_t len) {
    return aegis_cbor_str(p, cap, AEGIS_CBOR_TEXT, s, len);
}

static inline int32_t aegis_cbor_bytes(uint8_t *p, int32_t cap, const void *b,
                                       int32_t len) {
    return aegis_cbor_str(p, cap, AEGIS_CBOR_BYTES, b, len);
}

/* Map / array heads: follow with 2*n / n items. */
static inline int32_t aegis_cbor_map(uint8_t *p, int32_t cap, uint32_t n) {
    return aegis_cbor_head(p, cap, AEGIS_CBOR_MAP, n);
}

static inline int32_t aegis_cbor_array(uint8_t *p, int32_t cap, uint32_t n) {
    return aegis_cbor_head(p, cap, AEGIS_CBOR_ARRAY, n);
}

/* ---- CBOR number decoder -------------------------------------------------
 * Decodes exactly one CBOR number occupying the whole buffer: uint, negint,
 * half / single / double float.  Stores it in *out and returns AEGIS_OK, or
 * returns AEGIS_EINVAL for anything else (other types, tags, truncated or
 * trailing bytes, indefinite lengths).  Integers beyond 2^53 lose precision.
 */
static inline double aegis__half_to_double(uint16_t h) {
    uint64_t sign = (uint64_t)(h >> 15) << 63;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) { /* zero / subnormal: m * 2^-24, exact in a double */
        double v = (double)m * (1.0 / 16777216.0);
        return (h >> 15) ? -v : v;
    }
    if (e == 31) /* inf / nan */
        return aegis_bits_f64(sign | (0x7ffull << 52) | ((uint64_t)m << 42));
    return aegis_bits_f64(sign | ((uint64_t)(e - 15 + 1023) << 52) |
                          ((uint64_t)m << 42));
}

static inline double aegis__single_to_double(uint32_t f) {
    union { uint32_t u; float f; } x;
    x.u = f;
    return (double)x.f;
}

static inline int32_t aegis_cbor_number(const uint8_t *p, int32_t len,
                                        double *out) {
    if (len < 1)
        return AEGIS_EINVAL;
    int major = p[0] >> 5, ai = p[0] & 0x1f;
    int32_t extra;
    if (ai < 24)
        extra = 0;
    else if (ai == 24)
        extra = 1;
    else if (ai == 25)
        extra = 2;
    else if (ai == 26)
        extra = 4;
    else if (ai == 27)
        extra = 8;
    else
        return AEGIS_EINVAL;
    if (len != 1 + extra)
        return AEGIS_EINVAL;
    uint64_t n = (uint64_t)ai;
    if (extra) {
        n = 0;
        for (int32_t i = 0; i < extra; i++)
            n = (n << 8) | p[1 + i];
    }
    switch (major) {
    case AEGIS_CBOR_UINT:
        *out = (double)n;
        return AEGIS_OK;
    case AEGIS_CBOR_NEGINT:
        *out = -1.0 - (double)n;
        return AEGIS_OK;
    case 7:
        if (ai == 25) {
            *out = aegis__half_to_double((uint16_t)n);
            return AEGIS_OK;
        }
        if (ai == 26) {
            *out = aegis__single_to_double((uint32_t)n);
            return AEGIS_OK;
        }
        if (ai == 27) {
            *out = aegis_bits_f64(n);
            return AEGIS_OK;
        }
        return AEGIS_EINVAL; /* false/true/null/undefined/simple */
    default:
        return AEGIS_EINVAL;
    }
}

/* ---- event buffer --------------------------------------------------------
 * Modules that subscribe need aegis_alloc.  One static buffer is enough (the
 * host uses it only until aegis_event returns).  Define AEGIS_EVENT_BUFFER
 * before including this header to get a ready-made aegis_alloc over a static
 * buffer of AEGIS_EVENT_BUFFER bytes:
 *
 *   #define AEGIS_EVENT_BUFFER (AEGIS_TOPIC_MAX + AEGIS_DATA_MAX)
 *   #include "aegis.h"
 */
#ifdef AEGIS_EVENT_BUFFER
static uint8_t aegis__event_buf[AEGIS_EVENT_BUFFER];

AEGIS_EXPORT(aegis_alloc)
int32_t aegis_alloc(int32_t len) {
    if (len < 0 || len > (int32_t)sizeof aegis__event_buf)
        return 0; /* event dropped and counted by the host */
    return (int32_t)(uintptr_t)aegis__event_buf;
}
#endif

#endif /* AEGIS_H */

