"""Runtime bundles for updates over the mesh (`aegis push-runtime`).

The bundle is the runtime exactly as `aegis flash` lays it out for the
board (node/flash.py: .mpy for the board's arch, the ROMFS image where the
board uses one, the native wasm3 module), minus the boot file and the
board's config, signed with the fleet's operator key in the
node/core/rtbundle.py format.  After the push, the board restarts into it;
`wait_runtime` watches the retained statuses until each board reports the
new version, or that it fell back.
"""
import fcntl
import os
import time

from node import flash, keys
from node.core import package as pk
from node.core import rtbundle as R


class RuntimeError_(Exception):
    pass


def build_bundle(board_name, key_path, version=None, log=print):
    """Signed bundle bytes of this tree's runtime for `board_name`."""
    from node import __version__
    version = version or __version__
    try:
        pk.parse_version(version)
    except pk.PackageError as e:
        raise RuntimeError_(str(e))
    board = flash.load_board(board_name)
    sign, raw = keys.signer(keys.load_private(key_path))
    out_dir = os.path.join(flash.ROOT, "build", "runtime", board_name)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    with open(out_dir + ".lock", "w") as lock:     # one build per dir at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        flash.build(board, {}, {}, out_dir, log, version=version)
        files = []
        for rel, path in flash.runtime_files(board, out_dir):
            with open(path, "rb") as f:
                files.append((rel, f.read()))
    m, payload = R.make_manifest(version, board["name"], board["mpy_arch"], files)
    log("runtime %s for %s: %d files, %d KiB, signed with %s"
        % (version, board_name, len(files), len(payload) // 1024, key_path))
    return R.build(m, payload, sign, raw)


def read_bundle(data):
    """Header of bundle bytes (checked, not verified: the board verifies)."""
    try:
        return R.parse_header(data[:12 + R.HEADER_MAX])
    except R.BundleError as e:
        raise RuntimeError_("not a runtime bundle: %s" % e)


def wait_runtime(url, fleet, nodes, version, timeout_s, log, tls=None):
    """{node: (ok, detail)} once each node's retained status reports
    runtime `version` online, or a fallback from it, or the time is up."""
    from node.mqtt.operator import Session, StatusWatch
    watch = StatusWatch(fleet)
    sess = Session(url, watch.on_message, lambda: watch.subscribe(sess.link), **(tls or {}))
    sess.start()
    out = {}

    def verdict(n):
        s = watch.nodes.get(n)
        rt = (s or {}).get("runtime")
        if type(rt) is not dict:
            return None
        failed = rt.get("failed")
        if type(failed) is dict and failed.get("v") == version and rt.get("v") != version:
            return (False, "fell back to runtime %s (slot %s): %s"
                    % (rt.get("v"), rt.get("slot"), failed.get("error")))
        if s["online"] and rt.get("v") == version and not rt.get("trial"):
            return (True, "runs runtime %s (slot %s)" % (version, rt.get("slot")))
        return None

    t0 = time.monotonic()
    try:
        deadline = t0 + timeout_s
        while time.monotonic() < deadline and len(out) < len(nodes):
            sess.run_once(0.2)
            for n in nodes:
                if n not in out:
                    v = verdict(n)
                    if v:
                        out[n] = v
                        log("%s: %s after %.1f s" % (n, v[1], time.monotonic() - t0))
    finally:
        sess.stop()
    for n in nodes:
        if n not in out:
            rt = (watch.nodes.get(n) or {}).get("runtime") or {}
            out[n] = (False, "did not report runtime %s within %.0f s (last: %s)"
                      % (version, timeout_s, rt.get("v", "no status")))
    return out
