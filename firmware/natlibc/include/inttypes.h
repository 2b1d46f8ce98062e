#pragma once
#include <stdint.h>
#if UINTPTR_MAX == 0xffffffffffffffffu
#define __PRI64 "l"
#else
#define __PRI64 "ll"
#endif
#define PRIi32 "i"
#define PRId32 "d"
#define PRIu32 "u"
#define PRIx32 "x"
#define PRIi64 __PRI64 "i"
#define PRId64 __PRI64 "d"
#define PRIu64 __PRI64 "u"
#define PRIx64 __PRI64 "x"
