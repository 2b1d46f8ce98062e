#pragma once
/* What wasm3's float opcodes use (m3_math_utils.h, m3_exec.h).  On x64 the
   compiler inlines most of these; soft-float targets call natlibc.c. */
#define NAN (__builtin_nanf(""))
#define INFINITY (__builtin_inff())
#define HUGE_VAL (__builtin_inf())
#define isnan(x) __builtin_isnan(x)
#define isinf(x) __builtin_isinf(x)
#define signbit(x) __builtin_signbit(x)
double floor(double); float floorf(float);
double ceil(double); float ceilf(float);
double trunc(double); float truncf(float);
double rint(double); float rintf(float);
double nearbyint(double); float nearbyintf(float);
double sqrt(double); float sqrtf(float);
double fabs(double); float fabsf(float);
double copysign(double, double); float copysignf(float, float);
double fmin(double, double); float fminf(float, float);
double fmax(double, double); float fmaxf(float, float);
