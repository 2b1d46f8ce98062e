#pragma once
#include <stddef.h>
/* Allocation goes to the MicroPython GC heap (natlibc.c). */
void *malloc(size_t n);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t n);
void free(void *p);
void abort(void) __attribute__((noreturn));
