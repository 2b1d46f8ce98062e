"""Runtime updates over the mesh (issue 4): `aegis push-runtime` builds the
board runtime as `aegis flash` does, signs it as a runtime bundle and
streams it to a real MicroPython board on a real Mosquitto; the board
verifies it, unpacks it into its other slot and restarts into it.

* a real build with another version comes back online, reported in the
  status, and still runs its module and forwards its events; serial
  `aegis flash` afterwards still works and boots what it copied;
* a runtime whose code raises at import falls back to the previous one,
  which says so in its status; the pusher exits 1 with the reason;
* bad signature, downgrade, wrong board, and a module package dressed as
  a runtime (or the reverse) are refused, and the board keeps serving.
"""
import os
import re
import shutil
import subprocess
import sys
import threading
import types

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import ROOT, Signer
from gateway_proc import wait_for
from host_sim.boards import ProxyHost, SourceBoard, UnixBoard
from node.core import rtbundle as R
from node.mqtt.push import push as mqtt_push
from test_board_runtime import push, replies, request, status


def push_runtime(broker, *args, to="b1", cwd=ROOT, timeout=240):
    return subprocess.run([sys.executable, "-m", "node.cli.main", "push-runtime", "--to", to,
                           "--broker", broker.url, "--fleet", "test", "--boot-timeout", "90",
                           "--timeout", "120"] + list(args),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def push_runtime_interrupted(broker, args, progress, interrupt):
    """`aegis push-runtime` in the background; once its progress shows
    `progress` (e.g. "b1:  10%"), `interrupt()` runs (kill and restart the
    broker or the board).  (returncode, stdout, stderr) of the push."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli.main", "push-runtime", "--to", "b1", "--broker",
         broker.url, "--fleet", "test", "--chunk", "256"] + list(args),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    th = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    th.start()
    wait_for(lambda: any(progress in x for x in err), 120, "transfer under way")
    interrupt()
    proc.wait(timeout=300)
    th.join(5)
    return proc.returncode, proc.stdout.read(), "".join(err)


def runtime(sub, node="b1"):
    return status(sub, node).get("runtime") or {}


def patched_tree(tmp, edit):
    """A copy of this tree's node/ with `edit(path of node/board/runtime.py)`
    applied (boards, firmware and the built native modules shared): the
    real CLI run from there builds the patched runtime."""
    tree = tmp / "tree"
    shutil.copytree(os.path.join(ROOT, "node"), tree / "node",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for d in ("boards", "firmware"):
        os.symlink(os.path.join(ROOT, d), tree / d)
    os.makedirs(tree / "build")
    os.symlink(os.path.join(ROOT, "build", "firmware"), tree / "build" / "firmware")
    src = tree / "node" / "board" / "runtime.py"
    before = src.read_text()
    edit(src)
    assert src.read_text() != before, "the patch no longer applies to runtime.py"
    return tree


def test_update_over_the_mesh_then_serial_flash(tmp_path, broker):
    op = Signer(str(tmp_path / "op"))
    sub = Subscriber(broker, "aegis/test/#")
    board = UnixBoard("b1", tmp_path / "b1", broker.url, [op.pub],
                      extra={"engine": "proxy", "status_ms": 2000})
    proxy = ProxyHost("gw-1", tmp_path / "gw", broker.url, [op.pub], ["b1"])
    try:
        board.start()
        board.flash()
        proxy.start()
        board.wait_for("connected to broker")
        rt = wait_for(lambda: runtime(sub).get("v") and runtime(sub), 30, "status with runtime")
        from node import __version__ as v1
        assert rt == {"v": v1, "slot": "a"}
        wait_for(lambda: "proxy host connected" in proxy.logs(), 30, "proxy up")
        (tmp_path / "f.pkg").write_bytes(op.example("facts"))
        r = push(broker, tmp_path / "f.pkg", timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr

        # The broker dies in the middle of the transfer (small chunks, so
        # that it is still under way): the push resumes once it is back.
        rc, out, err = push_runtime_interrupted(
            broker, ["--board", "unix", "--sign-key", op.prefix + ".key", "--version", "0.2.0",
                     "--save", str(tmp_path / "rt2.bin")],
            "b1:  10%", lambda: (broker.kill(), broker.start()))
        assert rc == 0, out + err + board.console()[-3000:]
        assert "b1: runtime 0.2.0: runs runtime 0.2.0 (slot b)" in out
        assert "reconnected" in err and "100%" in err, err   # resumed, with progress
        assert runtime(sub) == {"v": "0.2.0", "slot": "b"}
        fs = tmp_path / "b1" / "fs"
        with open(fs / "rt_b" / "rt.json") as f:
            assert f.read().count("0.2.0") == 1
        assert sorted(os.listdir(fs / "aegis" / "incoming")) == []
        assert "runtime 0.2.0 in slot b confirmed" in board.console()
        r = subprocess.run([sys.executable, "-m", "node.cli.main", "status", "--broker",
                            broker.url, "--fleet", "test"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert "0.2.0 (slot b)" in r.stdout.splitlines()[-1], r.stdout + r.stderr

        # The new runtime runs the module it kept on flash and forwards events.
        wait_for(lambda: any(m["name"] == "facts" and m["state"] == "running"
                             for m in status(sub).get("modules", [])), 30, "module back")
        request(sub, 1)
        env = wait_for(lambda: replies(sub), 30, "a reply from the updated board")[0]
        assert env["src"] == "b1" and cbor2.loads(env["data"])["node_id"] == "b1"

        # The same bundle again: a no-op answered from the offer.
        r = push_runtime(broker, "--bundle", str(tmp_path / "rt2.bin"))
        assert r.returncode == 0 and "already active" in r.stdout, r.stdout + r.stderr

        # The next update goes to the other slot: A, the top level that
        # `aegis flash` wrote (its lib/, romfs.img and rt.json replaced).
        r = push_runtime(broker, "--board", "unix", "--sign-key", op.prefix + ".key",
                         "--version", "0.2.1")
        assert r.returncode == 0 and "runs runtime 0.2.1 (slot a)" in r.stdout, r.stderr
        with open(fs / "rt.json") as f:
            assert '"0.2.1"' in f.read()
        assert os.path.exists(fs / "romfs.img") and os.path.exists(fs / "main.py")
        assert os.path.exists(fs / "aegis.json") and not os.path.exists(fs / "rtboot.json.tmp")
        request(sub, 3)
        wait_for(lambda: len(replies(sub)) >= 2, 30, "a reply from 0.2.1")

        # Serial flashing always works, whatever the mesh installed: it boots
        # what it copied (slot A), and the module is still on the board.  (A
        # running Unix-port board cannot be interrupted through its raw pty,
        # so it is power-cycled to its REPL first, as `aegis flash` resets a
        # real board before copying.)
        board.stop()
        board.start()
        board.flash()
        wait_for(lambda: runtime(sub) == {"v": v1, "slot": "a"}, 60, "back on the flashed runtime")
        request(sub, 4)
        wait_for(lambda: len(replies(sub)) >= 3, 30, "a reply after the serial flash")
    finally:
        proxy.stop()
        board.stop()
        sub.close()
    print(board.console()[-3000:])


def test_broken_runtimes_fall_back_and_bad_bundles_are_refused(tmp_path, broker):
    op, stranger = Signer(str(tmp_path / "op")), Signer(str(tmp_path / "stranger"))
    sub = Subscriber(broker, "aegis/test/#")
    board = SourceBoard("b1", tmp_path / "b1", broker.url, [op.pub],
                        extra={"engine": "proxy", "status_ms": 2000, "runtime_confirm_s": 10})
    key = ["--board", "unix", "--sign-key", op.prefix + ".key"]
    try:
        board.start()
        board.wait_for("connected to broker")
        v1 = wait_for(lambda: runtime(sub).get("v"), 30, "status with runtime")

        # A runtime whose code raises at import: the boot file falls back.
        tree = patched_tree(tmp_path / "t1", lambda p: p.write_text(
            'raise ImportError("broken on purpose")\n' + p.read_text()))
        r = push_runtime(broker, *key, "--version", "0.3.0", "--save",
                         str(tmp_path / "rt3.bin"), cwd=tree)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "fell back to runtime %s (slot a)" % v1 in r.stderr, r.stderr
        assert "broken on purpose" in r.stderr
        rt = runtime(sub)
        assert rt["v"] == v1 and rt["slot"] == "a" and rt["failed"]["v"] == "0.3.0"
        board.wait_for("falling back to slot a")
        # The same broken version again is refused before any restart.
        r = push_runtime(broker, "--bundle", str(tmp_path / "rt3.bin"))
        assert r.returncode == 1 and "already failed on this board" in r.stderr, r.stderr

        # A runtime that starts but never confirms (here: never marks itself
        # good) is restarted after runtime_confirm_s and falls back too.
        tree = patched_tree(tmp_path / "t2", lambda p: p.write_text(p.read_text().replace(
            "rtslot.confirm(self.rt)", "pass")))
        r = push_runtime(broker, *key, "--version", "0.3.1", cwd=tree)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "fell back to runtime %s (slot a): not online within 10 s" % v1 in r.stderr

        # The board loses power in the middle of the transfer: once it is
        # back, the push resumes from what the board kept on flash.
        rc, out, err = push_runtime_interrupted(broker, list(key) + ["--version", "0.4.0"],
                                                "b1:  30%", lambda: (board.kill(), board.start()))
        assert rc == 0 and "runs runtime 0.4.0 (slot b)" in out, out + err
        assert "100%" in err
        held = [tuple(map(int, re.search(r"(\d+)/(\d+) chunks held", x).groups()))
                for x in board.console().splitlines() if "receiving aegis-runtime@0.4.0" in x]
        assert held[0][0] == 0 and 0 < held[1][0] < held[1][1], held   # resumed from flash
        # A power cut: the board boots the slot its marker names.
        n = board.console().count("connected to broker")
        board.kill()
        board.start()
        board.wait_for("connected to broker", count=n + 1)
        assert board.console().rsplit("booted runtime ", 1)[1].startswith("0.4.0 from slot b")

        def refused(bundle_bytes, text):
            (tmp_path / "x.bin").write_bytes(bundle_bytes)
            r = push_runtime(broker, "--bundle", str(tmp_path / "x.bin"))
            assert r.returncode == 1 and text in r.stderr, r.stdout + r.stderr

        def signed(signer, version="0.5.0", **changes):
            # Small payloads: every check below comes before the unpacking.
            m, payload = R.make_manifest(version, "unix", "x64", [("lib/x.mpy", b"0123456789")])
            m.update(changes)
            return R.build(m, payload, signer.sign, signer.raw)
        b5 = signed(op)
        n5 = R.header_len(b5)
        h5 = cbor2.loads(b5[12:12 + n5])
        h5["sig"] = bytes([h5["sig"][0] ^ 1]) + h5["sig"][1:]
        h5 = cbor2.dumps(h5, canonical=True)
        refused(b5[:8] + len(h5).to_bytes(4, "big") + h5 + b5[12 + n5:], "bad signature")
        refused(signed(stranger), "signed by an unknown key")
        refused(signed(op, "0.3.9"), "older than the running 0.4.0")
        refused(signed(op, arch="armv6m"), "built for arch armv6m")

        def raw_push(data, name, version):     # past the CLI's own checks
            hdr = types.SimpleNamespace(name=name, version=version)
            _, res = mqtt_push(broker.url, "test", data, "b1", timeout_s=60, hdr=hdr,
                               log=lambda m: None)
            return res["b1"][:2]
        # Another board type: the CLI stops it, and so would the board.
        (tmp_path / "pico.bin").write_bytes(signed(op, board="pico_w"))
        r = push_runtime(broker, "--bundle", str(tmp_path / "pico.bin"))
        assert r.returncode == 2 and "not for b1 (unix)" in r.stderr, r.stderr
        ok, detail = raw_push(signed(op, board="pico_w"), R.KIND, "0.5.0")
        assert not ok and "built for board 'pico_w'" in detail, detail
        # A module package is never a runtime, nor a runtime a module: the
        # board decides by magic and the signed manifest (and the signatures
        # cover different bytes).
        ok, detail = raw_push(R.MAGIC + op.example("facts")[8:], R.KIND, "0.6.0")
        assert not ok and "not a runtime manifest" in detail, detail
        ok, detail = raw_push(b"AEGISPK1" + signed(op, "0.6.0")[8:], "facts", "0.6.0")
        assert not ok and "manifest ABI" in detail, detail

        # Seven refusals since 0.4.0 started, and the board keeps serving.
        st = wait_for(lambda: status(sub)["counts"].get("deploy_refused", 0) >= 7 and status(sub),
                      20, "the refusals counted")
        assert st["online"] and st["runtime"] == {"v": "0.4.0", "slot": "b"}
        assert board.proc.poll() is None
    finally:
        board.stop()
        sub.close()
    print(board.console()[-4000:])
