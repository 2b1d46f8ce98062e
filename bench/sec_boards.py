"""Section `boards` (issue 4): the board runtime on the real MicroPython
Unix port with a Pico W sized heap (-X heapsize=192K), flashed through a
pty with mpremote, on a real Mosquitto with a real `aegis proxy`.

(a) heap_boot: gc.mem_alloc() after gc.collect() once the flashed runtime
    is online (retained status), vs the bare interpreter's own heap in
    use.  Target <= 48 KiB.  The runtime's bytecode runs in place from the
    flashed ROMFS image (firmware/rommap.c maps it outside the heap, as a
    board's flash partition is), and a board without modules has not
    loaded the event, proxy, ports or push code; heap_module is the same
    board later, one module running, idle.
(b) heap_push_peak: the largest gc.mem_alloc() (after gc.collect(), sampled
    after every MQTT message) while a 64 KiB module is pushed in 1 KiB
    chunks into flash, verified and handed to the proxy.  Target <= 48 KiB.
    Also split: heap_boot_code (firmware/main.py up to starting the runtime:
    the objects the imported code creates, qstrs included; its bytecode
    stays in the image) and heap_boot_data (the rest).
(c) flash: `aegis flash --board unix --no-start` (mpy-cross build + one
    mpremote session) vs plain `mpremote connect PTY resume fs cp` of the
    same files in one session.  Ratio, median of the rounds.
Note: the Unix port is 64-bit, so every object is about twice a Pico's.
"""
import fcntl
import os
import subprocess
import sys
import time

from benchlib import ROOT, board_status as _status, median, pad_wasm, result, target, wait_until

sys.path.insert(0, os.path.join(ROOT, "tests"))
SECTION = "boards"
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")


def _wait(cond, timeout, what):
    return wait_until(cond, timeout, what, poll=0.05)


def _bare_heap():
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=192K", "-c",
                        "import gc\ngc.collect()\nprint(gc.mem_alloc())"],
                       capture_output=True, text=True, timeout=30)
    return int(r.stdout.strip())


_IDLE_S = 33     # deploy.py's _IDLE_TICKS (30 s) and a margin


def _code_heap():
    """Heap taken by importing the flashed runtime's code, nothing started:
    firmware/main.py as flashed (ROMFS mounted the way the board does it)
    up to its last line, `runtime.main(...)`."""
    out = os.path.join(ROOT, "build", "flash", "unix")
    with open(out + ".lock", "w") as lock:      # a flash elsewhere rebuilds `out`
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run([MICROPYTHON, "-X", "heapsize=192K", "-c",
                            "import gc\ngc.collect()\na = gc.mem_alloc()\n"
                            "exec(open('main.py').read().rsplit('runtime.main(', 1)[0])\n"
                            "gc.collect()\nprint(gc.mem_alloc() - a)"],
                           cwd=out, capture_output=True, text=True, timeout=60)
    return int(r.stdout.strip())


def _heaps(ctx):
    from broker import Broker, Subscriber
    from conftest import Signer, example
    from host_sim.boards import ProxyHost, UnixBoard
    d = ctx.mkdtemp("boards-heap")
    b = Broker(os.path.join(d, "broker")).start()
    op = Signer(os.path.join(d, "op"))
    sub = board = proxy = None
    try:
        sub = Subscriber(b, "aegis/test/node/#")
        board = UnixBoard("bench-b", os.path.join(d, "board"), b.url, [op.pub],
                          extra={"heap_probe": True, "status_ms": 1000,
                                 "engine": "proxy"}).start()
        board.flash()
        st = _wait(lambda: _status(sub, "bench-b").get("counts", {}).get("heap") and
                   _status(sub, "bench-b"), 60, "board status")
        boot = st["counts"]["heap"]
        code = _code_heap()
        proxy = ProxyHost("bench-gw", os.path.join(d, "gw"), b.url, [op.pub], ["bench-b"]).start()
        t, wasm = example("facts")
        pkg = os.path.join(d, "big.pkg")
        with open(pkg, "wb") as f:
            f.write(op.pack("facts", "1.0.0", pad_wasm(wasm, 64 * 1024), t["subscribe"],
                            t["emit"], t["ports"]))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "node.cli.main", "push", pkg, "--to", "bench-b",
                            "--broker", b.url, "--fleet", "test", "--timeout", "180"],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
        push_s = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError("push to the board failed: %s%s" % (r.stderr, board.console()[-800:]))
        st = _wait(lambda: [m for m in _status(sub, "bench-b").get("modules", [])
                            if m["state"] == "running"] and _status(sub, "bench-b"), 60,
                   "status after the push")
        # Steady state with the module: the push code is unloaded after 30
        # idle seconds (node/board/deploy.py), so read a status from after that.
        after = (time.time() + _IDLE_S) * 1000
        mod = _wait(lambda: _status(sub, "bench-b").get("ts", 0) > after and
                    _status(sub, "bench-b"), _IDLE_S + 30, "status with the module, idle")
        return boot, code, st["counts"]["heap_peak"], push_s, mod["counts"]["heap"]
    finally:
        for x in (proxy, board, sub):
            if x is not None:
                (x.close if hasattr(x, "close") else x.stop)()
        b.kill()


def _flash_times(ctx):
    from host_sim.boards import UnixBoard
    from node import flash
    d = ctx.mkdtemp("boards-flash")
    board = UnixBoard("bench-f", d, "mqtt://127.0.0.1:1", [_key(d)]).start()
    ours, raw = [], []
    try:
        for i in range(ctx.rounds):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "node.cli.main", "flash", "--board", "unix",
                                "--port", board.pty, "--config", board.config, "--no-start"],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
            ours.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise RuntimeError("aegis flash failed: " + r.stderr[-800:])
            out = os.path.join(ROOT, "build", "flash", "unix")
            with open(out + ".lock", "w") as lock:   # a flash elsewhere rebuilds `out`
                fcntl.flock(lock, fcntl.LOCK_EX)
                cmds = flash.copy_commands(out)[:-1]
                t0 = time.perf_counter()
                r = subprocess.run([MPREMOTE, "connect", board.pty, "resume"] + cmds,
                                   capture_output=True, text=True, timeout=300)
                raw.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise RuntimeError("mpremote cp failed: " + r.stderr[-800:])
            ctx.log("  flash round %d: aegis flash %.2fs, mpremote cp %.2fs" % (i, ours[-1], raw[-1]))
        return ours, raw, cmds.count("cp")
    finally:
        board.stop()


def _key(d):
    from node import keys
    os.makedirs(d, exist_ok=True)
    keys.keygen(os.path.join(d, "op"))
    return os.path.join(d, "op.pub")


def run(ctx):
    out = []
    bare = _bare_heap()
    boot, code, peak, push_s, module = _heaps(ctx)
    note = "Unix port x64 (objects ~2x a Pico's); bytecode in place from ROMFS"
    out.append(result(SECTION, "heap_boot", boot / 1024, "KiB", bare / 1024,
                      "bare interpreter", target("<=", 48), note=note))
    out.append(result(SECTION, "heap_boot_code", code / 1024, "KiB", bare / 1024,
                      "bare interpreter",
                      note="of heap_boot: importing the runtime (bytecode runs from ROMFS)"))
    out.append(result(SECTION, "heap_boot_data", (boot - code) / 1024, "KiB", bare / 1024,
                      "bare interpreter", target("<=", 48),
                      note="of heap_boot: the runtime's data (buffers, outbox, dedup, bus)"))
    out.append(result(SECTION, "heap_push_peak_64k", peak / 1024, "KiB", bare / 1024,
                      "bare interpreter", target("<=", 48),
                      note="64 KiB module, 1 KiB chunks, push took %.1f s" % push_s))
    out.append(result(SECTION, "heap_module", module / 1024, "KiB", bare / 1024,
                      "bare interpreter",
                      note="one proxied module running, idle, push code unloaded: what a "
                           "board runs with (heap_boot has no module, so no event code)"))
    ours, raw, n = _flash_times(ctx)
    out.append(result(SECTION, "flash", median(ours), "s", median(raw), "mpremote cp",
                      samples=ours, note="%d files over a pty; ours includes mpy-cross" % n))
    return out
