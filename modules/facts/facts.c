/*
 * facts -- answer requests with the node's facts (aegis-edge example, C).
 *
 * Subscribes: facts/request      Emits: facts/reply      Ports: facts
 *
 * On every event on facts/request, calls port "facts" (the node's adapter
 * returns the node facts as a CBOR map; the request data is passed as the
 * port input) and emits facts/reply with the output bytes unchanged.
 * Shows the size-probe pattern: when the output does not fit the static
 * buffer the module refuses with AEGIS_E2BIG rather than truncating.
 * Port errors (ENOENT when the port is not bound on this node, EIO, ...) are
 * logged and returned as the handler result.
 */
#define AEGIS_EVENT_BUFFER (AEGIS_TOPIC_MAX + 4096)
#include "aegis.h"

#define OUT_CAP 8192

static uint8_t out[OUT_CAP];

AEGIS_EXPORT(aegis_event)
int32_t aegis_event(const uint8_t *topic, int32_t topic_len,
                    const uint8_t *data, int32_t data_len) {
    (void)topic;
    (void)topic_len;
    int32_t n = aegis_call("facts", 5, data, data_len, out, OUT_CAP);
    if (n < 0) {
        aegis_logs(AEGIS_WARN, "facts: port call failed");
        return n;
    }
    if (n > OUT_CAP) {
        aegis_logs(AEGIS_WARN, "facts: reply too large");
        return AEGIS_E2BIG;
    }
    return aegis_emit("facts/reply", 11, out, n);
}
