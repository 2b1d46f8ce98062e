// A switch that clang turns into br_table, and if/else chains.
#define EXPORT(n) __attribute__((export_name(n)))

__attribute__((noinline)) static int classify(int x) {
    switch (x & 15) {
    case 0: return 3;   case 1: return x * 7;   case 2: return x ^ 0x55;
    case 3: return -x;  case 4: return x >> 2;  case 5: return x + 1000;
    case 6: return x % 13; case 7: return 42;  case 8: return x * x;
    case 9: return x - 9; default: return x & 0xff;
    }
}

__attribute__((noinline)) static int chain(int x) {
    if (x < -100) return 1;
    else if (x < 0) return 2;
    else if (x == 0) return 3;
    else if (x < 10) { if (x & 1) return 4; else return 5; }
    else if (x < 1000) return 6 + (x > 500);
    return 8;
}

EXPORT("mix") int mix(int n) {
    int s = 0;
    for (int i = -n; i < n; i++) s = s * 3 + classify(i) + chain(i * 37);
    return s;
}
