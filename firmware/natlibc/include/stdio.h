#pragma once
#include <stddef.h>
#include <stdarg.h>
/* wasm3 formats error messages with snprintf; printing is compiled out. */
int snprintf(char *buf, size_t n, const char *fmt, ...);
int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap);
#define printf(...) ((void)0)
#define fprintf(...) ((void)0)
#define puts(s) ((void)0)
