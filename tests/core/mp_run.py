# Runs the portable core tests under MicroPython (and CPython): imports each
# tests/core/test_*.py given on the command line and calls every test_*
# function.  Prints one line per failure and a closing "N passed, N failed".
import gc
import sys

sys.path.insert(0, ".")
sys.path.insert(0, "tests/core")

passed = 0
failed = 0
for path in sys.argv[1:]:
    name = path.split("/")[-1][:-3]
    mod = __import__(name)
    for attr in sorted(dir(mod)):
        if not attr.startswith("test_"):
            continue
        fn = getattr(mod, attr)
        gc.collect()    # a fragmented heap would fail big allocations, not the code
        try:
            fn()
            passed += 1
        except Exception as e:
            failed += 1
            print("FAIL %s.%s: %s: %s" % (name, attr, type(e).__name__, e))
            sys.print_exception(e) if hasattr(sys, "print_exception") else None
    mod = fn = None
    sys.modules.pop(name, None)     # each file's tests and data, freed before the next
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
