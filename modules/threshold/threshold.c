/*
 * threshold -- temperature threshold alarm (aegis-edge example, C).
 *
 * Subscribes: sensor/+/temp, config/threshold      Emits: alarm/...
 *
 * - config/threshold, data = CBOR number: sets the threshold, kept in state
 *   key "threshold" as an 8-byte little-endian IEEE double (default 30.0).
 * - sensor/<id>/temp, data = CBOR number: when the reading rises above the
 *   threshold (reading > threshold) and the sensor was not already in alarm,
 *   emits alarm/<id> with CBOR map {"value": reading, "threshold": t}.  When
 *   an alarmed sensor reads <= threshold again, emits alarm/<id>/clear with
 *   the same map.  Whether a sensor is in alarm ("armed") is kept in state
 *   (key "armed/<id>", 1 byte; deleted when cleared), so it survives
 *   restarts and version swaps.
 *
 * Non-numeric data or an unexpected topic returns AEGIS_EINVAL (counted by
 * the node as a handler error).
 */
#define AEGIS_EVENT_BUFFER (AEGIS_TOPIC_MAX + AEGIS_DATA_MAX)
#include "aegis.h"

#define DEFAULT_THRESHOLD 30.0

static const char KEY_THRESHOLD[] = "threshold";

static double get_threshold(void) {
    uint8_t b[8];
    if (aegis_state_get(KEY_THRESHOLD, sizeof KEY_THRESHOLD - 1, b, 8) == 8)
        return aegis_bits_f64(aegis_get_u64le(b));
    return DEFAULT_THRESHOLD;
}

static int32_t set_threshold(double t) {
    uint8_t b[8];
    aegis_put_u64le(b, aegis_f64_bits(t));
    return aegis_state_set(KEY_THRESHOLD, sizeof KEY_THRESHOLD - 1, b, 8);
}

/* FNV-1a, used to shorten ids whose state key would exceed 128 bytes. */
static uint64_t fnv1a(const uint8_t *p, int32_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* State key for a sensor's armed flag: "armed/<id>", or "armed#<hash>" when
 * that would be longer than AEGIS_KEY_MAX. */
static int32_t armed_key(uint8_t *key, const uint8_t *id, int32_t id_len) {
    aegis_copy(key, "armed/", 6);
    if (6 + id_len <= AEGIS_KEY_MAX) {
        aegis_copy(key + 6, id, id_len);
        return 6 + id_len;
    }
    key[5] = '#';
    uint64_t h = fnv1a(id, id_len);
    for (int i = 0; i < 16; i++)
        key[6 + i] = "0123456789abcdef"[(h >> (60 - 4 * i)) & 15];
    return 22;
}

static int32_t emit_alarm(const uint8_t *id, int32_t id_len, int clear,
                          double value, double t) {
    uint8_t topic[AEGIS_TOPIC_MAX + 16];
    int32_t tl = 0;
    aegis_copy(topic, "alarm/", 6);
    tl = 6;
    aegis_copy(topic + tl, id, id_len);
    tl += id_len;
    if (clear) {
        aegis_copy(topic + tl, "/clear", 6);
        tl += 6;
    }
    uint8_t d[64];
    int32_t n = 0;
    n += aegis_cbor_map(d + n, sizeof d - n, 2);
    n += aegis_cbor_text(d + n, sizeof d - n, "value", 5);
    n += aegis_cbor_double(d + n, sizeof d - n, value);
    n += aegis_cbor_text(d + n, sizeof d - n, "threshold", 9);
    n += aegis_cbor_double(d + n, sizeof d - n, t);
    return aegis_emit(topic, tl, d, n);
}

static int topic_is(const uint8_t *t, int32_t tl, const char *s) {
    int32_t n = aegis_strlen(s);
    return tl == n && aegis_memeq(t, s, n);
}

AEGIS_EXPORT(aegis_event)
int32_t aegis_event(const uint8_t *topic, int32_t topic_len,
                    const uint8_t *data, int32_t data_len) {
    double v;
    if (aegis_cbor_number(data, data_len, &v) != AEGIS_OK)
        return AEGIS_EINVAL;

    if (topic_is(topic, topic_len, "config/threshold")) {
        if (v != v) /* NaN would never alarm: refuse it */
            return AEGIS_EINVAL;
        return set_threshold(v);
    }

    /* sensor/<id>/temp */
    if (topic_len < 13 || !aegis_memeq(topic, "sensor/", 7) ||
        !aegis_memeq(topic + topic_len - 5, "/temp", 5))
        return AEGIS_EINVAL;
    const uint8_t *id = topic + 7;
    int32_t id_len = topic_len - 12;
    for (int32_t i = 0; i < id_len; i++)
        if (id[i] == '/') /* more than one level between: not ours */
            return AEGIS_EINVAL;

    double t = get_threshold();
    uint8_t key[AEGIS_KEY_MAX];
    int32_t kl = armed_key(key, id, id_len);
    int armed = aegis_state_get(key, kl, 0, 0) >= 0;

    if (v > t && !armed) {
        int32_t r = emit_alarm(id, id_len, 0, v, t);
        if (r != AEGIS_OK)
            return r; /* not armed: the next reading retries */
        static const uint8_t one = 1;
        return aegis_state_set(key, kl, &one, 1);
    }
    if (!(v > t) && armed) {
        int32_t r = emit_alarm(id, id_len, 1, v, t);
        if (r != AEGIS_OK)
            return r;
        return aegis_state_set(key, kl, 0, -1);
    }
    return AEGIS_OK;
}
