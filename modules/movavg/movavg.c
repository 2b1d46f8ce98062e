/*
 * movavg -- moving average per sensor (aegis-edge example, C).
 *
 * Subscribes: sensor/+/temp      Emits: avg/<id>
 *
 * Keeps the last WINDOW (8) readings of up to MAX_SENSORS (16) sensors in a
 * static table (memory only: the window restarts empty after a restart or a
 * version swap).  On each reading emits avg/<id> with a CBOR double: the
 * mean of the readings in the window (fewer than 8 until the window fills).
 * When the table is full, a new sensor replaces the least recently updated
 * one.  Sensor ids longer than ID_MAX bytes and non-numeric data are refused
 * with AEGIS_EINVAL (counted by the node as a handler error).
 */
#define AEGIS_EVENT_BUFFER (AEGIS_TOPIC_MAX + AEGIS_DATA_MAX)
#include "aegis.h"

#define WINDOW 8
#define MAX_SENSORS 16
#define ID_MAX 64

struct sensor {
    uint8_t id[ID_MAX];
    int32_t id_len; /* 0: free slot */
    int32_t count;  /* readings in the window, <= WINDOW */
    int32_t next;   /* ring index of the next write */
    uint32_t used;  /* tick of the last update, for eviction */
    double v[WINDOW];
};

static struct sensor table[MAX_SENSORS];
static uint32_t tick;

static struct sensor *lookup(const uint8_t *id, int32_t id_len) {
    struct sensor *victim = &table[0];
    for (int i = 0; i < MAX_SENSORS; i++) {
        struct sensor *s = &table[i];
        if (s->id_len == id_len && aegis_memeq(s->id, id, id_len))
            return s;
        if (s->id_len == 0) {
            if (victim->id_len != 0)
                victim = s;
        } else if (victim->id_len != 0 && s->used < victim->used) {
            victim = s;
        }
    }
    aegis_copy(victim->id, id, id_len);
    victim->id_len = id_len;
    victim->count = 0;
    victim->next = 0;
    return victim;
}

AEGIS_EXPORT(aegis_event)
int32_t aegis_event(const uint8_t *topic, int32_t topic_len,
                    const uint8_t *data, int32_t data_len) {
    /* sensor/<id>/temp */
    if (topic_len < 13 || !aegis_memeq(topic, "sensor/", 7) ||
        !aegis_memeq(topic + topic_len - 5, "/temp", 5))
        return AEGIS_EINVAL;
    const uint8_t *id = topic + 7;
    int32_t id_len = topic_len - 12;
    if (id_len > ID_MAX)
        return AEGIS_EINVAL;
    for (int32_t i = 0; i < id_len; i++)
        if (id[i] == '/')
            return AEGIS_EINVAL;

    double v;
    if (aegis_cbor_number(data, data_len, &v) != AEGIS_OK)
        return AEGIS_EINVAL;

    struct sensor *s = lookup(id, id_len);
    s->used = ++tick;
    s->v[s->next] = v;
    s->next = (s->next + 1) % WINDOW;
    if (s->count < WINDOW)
        s->count++;

    double sum = 0.0; /* recomputed each time: no drift */
    for (int i = 0; i < s->count; i++)
        sum += s->v[i];
    double mean = sum / s->count;

    uint8_t out_topic[4 + ID_MAX];
    aegis_copy(out_topic, "avg/", 4);
    aegis_copy(out_topic + 4, id, id_len);
    uint8_t d[9];
    int32_t n = aegis_cbor_double(d, sizeof d, mean);
    return aegis_emit(out_topic, 4 + id_len, d, n);
}
