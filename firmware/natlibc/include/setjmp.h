#pragma once
/* Only for the type in py/nlr.h; nothing here calls setjmp. */
typedef long jmp_buf[32];
int setjmp(jmp_buf);
void longjmp(jmp_buf, int) __attribute__((noreturn));
