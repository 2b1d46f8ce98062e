#pragma once
/* NDEBUG build: asserts vanish (wasm3 is compiled with NASSERTS too). */
#define assert(x) ((void)0)
#define static_assert _Static_assert
