// Recursive fib: call-heavy, for the metered == unmetered check and timing.
#define EXPORT(n) __attribute__((export_name(n)))
EXPORT("fib") int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
