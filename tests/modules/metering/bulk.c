// memory.fill / memory.copy (built with -mbulk-memory): variable lengths so
// clang keeps the bulk instructions instead of unrolling them.
#define EXPORT(n) __attribute__((export_name(n)))
static unsigned char a[70000], b[70000];

EXPORT("fill_copy") unsigned fill_copy(unsigned n, unsigned v) {
    if (n > sizeof a) n = sizeof a;
    __builtin_memset(a, (int)v, n);
    __builtin_memcpy(b, a, n);
    __builtin_memset(a, 0, n / 2);
    __builtin_memmove(a + 1, b, n > 0 ? n - 1 : 0);
    unsigned s = 0;
    for (unsigned i = 0; i < n; i += 97) s = s * 31 + a[i] + b[i];
    return s + n;
}

EXPORT("grow") int grow(int pages) { return __builtin_wasm_memory_grow(0, pages); }
EXPORT("size") int size(void) { return __builtin_wasm_memory_size(0); }
