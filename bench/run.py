"""aegis-edge benchmarks: `.venv/bin/python bench/run.py` (or `make bench`).

Prints a table and writes bench/results.json (atomically).  Every figure is
a median over several rounds and comes with a raw baseline measured in the
same run; see bench/README.md for how to read them.

Adding a section: write `bench/sec_NAME.py` with `run(ctx) -> [result(...)]`
(helpers in bench/benchlib.py) and list it in SECTIONS below.
"""
import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the project, if not installed

import benchlib  # noqa: E402

# name -> module in bench/ exposing run(ctx); run in this order.
SECTIONS = {
    "runtime": "sec_runtime",   # issue 2: ceiling, dispatch, hot-swap
    "mqtt": "sec_mqtt",         # issue 3: push, forwarding, loss over Mosquitto
    "quic": "sec_quic",         # issue 6: push vs raw aioquic, session resumption
    "metering": "sec_metering", # issue 5: cost of fuel metering, spin stop time
    "boards": "sec_boards",     # issue 4: MicroPython heap, flash time over a pty
    "native": "sec_native",     # issue 7: wasm3 .mpy on MicroPython: speed, heap, events/s
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only this section (repeatable or comma-separated): %s"
                    % ", ".join(SECTIONS))
    ap.add_argument("--quick", action="store_true",
                    help="fewer rounds and smaller loops (a smoke test, noisier)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per measurement (default 5, 3 with --quick)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"),
                    help="results file (default bench/results.json)")
    ap.add_argument("--tmpdir", default=None,
                    help="where scratch files and the DirStore go (default: system temp); "
                    "point it at the node's real storage to measure its fsync")
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-round progress")
    a = ap.parse_args(argv)

    names = list(SECTIONS)
    if a.only:
        names = [n.strip() for o in a.only for n in o.split(",") if n.strip()]
        bad = [n for n in names if n not in SECTIONS]
        if bad:
            ap.error("unknown section(s) %s; known: %s" % (", ".join(bad), ", ".join(SECTIONS)))
    rounds = a.rounds or (3 if a.quick else 5)
    if rounds < 1:
        ap.error("--rounds must be >= 1")

    def log(msg):
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    machine = benchlib.machine_info()
    tmp = tempfile.mkdtemp(prefix="aegis-bench-", dir=a.tmpdir)
    machine["tmp_fs"] = benchlib.fs_type(tmp)
    ctx = benchlib.Context(rounds, a.quick, tmp, log)
    results, errors, timing = [], {}, {}
    t_all = time.perf_counter()
    try:
        for name in names:
            log("== %s (%d rounds%s)" % (name, rounds, ", quick" if a.quick else ""))
            t0 = time.perf_counter()
            try:
                mod = importlib.import_module(SECTIONS[name])
                results.extend(mod.run(ctx))
            except Exception as e:  # one broken section must not hide the others
                import traceback
                traceback.print_exc()
                errors[name] = "%s: %s" % (type(e).__name__, e)
            timing[name] = round(time.perf_counter() - t0, 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    machine["rounds"] = rounds
    machine["quick"] = a.quick
    machine["seconds"] = {"total": round(time.perf_counter() - t_all, 2), **timing}

    print(benchlib.table(results))
    for name, err in errors.items():
        print("section %s FAILED: %s" % (name, err))
    doc = {"machine": machine, "results": results}
    if errors:
        doc["errors"] = errors
    if not a.no_write:
        benchlib.write_json_atomic(a.out, doc)
        print("wrote %s (%.1f s)" % (os.path.relpath(a.out), machine["seconds"]["total"]))
    # Exit status: 2 when a section broke.  A missed target is a finding,
    # not a failure of the bench, so it does not change the status.
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
