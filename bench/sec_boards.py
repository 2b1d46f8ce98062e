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
    after every MQTT message and every 16 steps of the signature check)
    while a 64 KiB module is pushed in 1 KiB chunks into flash, verified
    and handed to the proxy.  Target <= 48 KiB.
    Also split: heap_boot_code (firmware/main.py up to starting the runtime:
    the objects the imported code creates, qstrs included; its bytecode
    stays in the image) and heap_boot_data (the rest).
(c) flash: `aegis flash --board unix --no-start` (mpy-cross build + one
    mpremote session) vs plain `mpremote connect PTY resume fs cp` of the
    same files in one session.  Ratio, median of the rounds.
(d) the same heap figures (_32bit) on a 32-bit MicroPython, the word size
    of a Pico W or an ESP32: the webassembly port under Node.js
    (bench/board32.py), booting plain .mpy files as stock board firmware
    (no ROMFS partition) does, so its bytecode counts in its heap.  Its
    driver samples between asyncio steps, so not inside the signature
    check (one step), where the 64-bit board's push peaks.
Note: the Unix port is 64-bit: its objects and GC blocks are twice a
Pico's, but bytecode in the heap is not (see (d)).
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


def _push_64k(op, d, broker, node):
    """Push a 64 KiB module (the facts example, padded) to `node` with
    `aegis push`; the push's wall time in seconds."""
    from conftest import example
    t, wasm = example("facts")
    pkg = os.path.join(d, "big.pkg")
    with open(pkg, "wb") as f:
        f.write(op.pack("facts", "1.0.0", pad_wasm(wasm, 64 * 1024), t["subscribe"],
                        t["emit"], t["ports"]))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "node.cli.main", "push", pkg, "--to", node,
                        "--broker", broker.url, "--fleet", "test", "--timeout", "180"],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        raise RuntimeError("push to %s failed: %s" % (node, r.stderr[-800:]))
    return time.perf_counter() - t0


def _running(sub, node):
    return _wait(lambda: [m for m in _status(sub, node).get("modules", [])
                          if m["state"] == "running"] and _status(sub, node), 60,
                 "status after the push")


def _idle(sub, node):
    # Steady state with the module: the push code is unloaded after 30
    # idle seconds (node/board/deploy.py), so read a status from after that.
    after = (time.time() + _IDLE_S) * 1000
    return _wait(lambda: _status(sub, node).get("ts", 0) > after and _status(sub, node),
                 _IDLE_S + 30, "status with the module, idle")


def _heaps(ctx, bits):
    """Boot, push a 64 KiB module, idle: the heap at each step.  64: the
    flashed Unix board, its own probe (heap_probe) in its status; 32: the
    board of bench/board32.py, sampled by its driver (the runtime's probe
    reads too high there)."""
    import board32
    from broker import Broker, Subscriber
    from conftest import Signer
    from host_sim.boards import ProxyHost, UnixBoard
    d = ctx.mkdtemp("boards-heap%d" % bits)
    node = "bench-b%d" % bits
    b = Broker(os.path.join(d, "broker")).start()
    op = Signer(os.path.join(d, "op"))
    sub = board = proxy = None
    try:
        sub = Subscriber(b, "aegis/test/node/#")
        extra = {"status_ms": 1000, "engine": "proxy"}
        if bits == 64:
            board = UnixBoard(node, os.path.join(d, "board"), b.url, [op.pub],
                              extra=dict(extra, heap_probe=True)).start()
            board.flash()
            st = _wait(lambda: _status(sub, node).get("counts", {}).get("heap") and
                       _status(sub, node), 60, "board status")
            r = {"bare": _bare_heap(), "boot": st["counts"]["heap"], "code": _code_heap()}
        else:
            tree = board32.build(node, os.path.join(d, "board"), b.url, [op.pub], extra)
            board = board32.Board32(tree).start()
            r = {"bare": board.bare()}
            _wait(lambda: _status(sub, node).get("online"), 60, "32-bit board status")
            r["boot"] = board.heap()[0]
        proxy = ProxyHost("gw-%d" % bits, os.path.join(d, "gw"), b.url, [op.pub],
                          [node]).start()
        r["push_s"] = _push_64k(op, d, b, node)
        st = _running(sub, node)
        if bits == 64:
            r["peak"] = st["counts"]["heap_peak"]
            r["module"] = _idle(sub, node)["counts"]["heap"]
        else:
            _, r["peak"], mods = board.heap()
            r["bytecode"] = board32.bytecode(tree, mods)
            _idle(sub, node)
            r["module"] = board.heap()[0]
        return r
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
    h = _heaps(ctx, 64)

    def row(metric, v, tgt=None, note=""):     # KiB, against h's bare interpreter
        out.append(result(SECTION, metric, v / 1024, "KiB", h["bare"] / 1024,
                          "bare interpreter", tgt, note=note))
    row("heap_boot", h["boot"], target("<=", 48),
        "Unix port x64 (objects ~2x a Pico's); bytecode in place from ROMFS")
    row("heap_boot_code", h["code"],
        note="of heap_boot: importing the runtime (bytecode runs from ROMFS)")
    row("heap_boot_data", h["boot"] - h["code"], target("<=", 48),
        "of heap_boot: the runtime's data (buffers, outbox, dedup, bus)")
    row("heap_push_peak_64k", h["peak"], target("<=", 48),
        "64 KiB module, 1 KiB chunks, push took %.1f s" % h["push_s"])
    row("heap_module", h["module"],
        note="one proxied module running, idle, push code unloaded: what a board runs "
             "with (heap_boot has no module, so no event code)")
    try:
        h = _heaps(ctx, 32)
    except Exception as e:      # board32.Unavailable (no Node.js), or a failed run
        ctx.log("  boards: 32-bit rows skipped: %s" % e)
    else:
        note = ("MicroPython webassembly port, 32-bit like a Pico W; plain .mpy, bytecode in "
                "the heap, as on stock firmware (no ROMFS partition)")
        row("heap_boot_32bit", h["boot"], target("<=", 48), note)
        row("heap_push_peak_64k_32bit", h["peak"], target("<=", 48),
            "as heap_push_peak_64k; push took %.1f s; %s" % (h["push_s"], note))
        row("heap_push_peak_64k_32bit_bytecode", h["bytecode"],
            note="of heap_push_peak_64k_32bit: the bytecode of the modules loaded then "
                 "(counted in their .mpy files), which a ROMFS partition keeps out of the heap")
        row("heap_module_32bit", h["module"], note="as heap_module; " + note)
    ours, raw, n = _flash_times(ctx)
    out.append(result(SECTION, "flash", median(ours), "s", median(raw), "mpremote cp",
                      samples=ours, note="%d files over a pty; ours includes mpy-cross" % n))
    return out
