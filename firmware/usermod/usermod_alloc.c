// wasm3's allocations in a firmware build (user C module): from the GC
// heap, like the native module's natlibc.c, so everything wasm3 keeps is
// reachable from the Runtime object and freed with it.  The port's own
// libc heap is small on most boards (and absent on some).
#include "py/runtime.h"
#include "py/gc.h"

void *w3_calloc(size_t n, size_t size) {
    size_t total = n * size;
    if (size && total / size != n) {
        return NULL;
    }
    void *p = m_malloc_maybe(total ? total : 1);
    if (p) {
        memset(p, 0, total);
    }
    return p;
}

void *w3_realloc(void *p, size_t n) {
    return m_realloc_maybe(p, n ? n : 1, true);
}

void w3_free(void *p) {
    if (p) {
        m_free(p);
    }
}
