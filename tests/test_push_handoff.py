"""A finished push is handed to the store by rename (the received, fsynced
file becomes packages/NAME/VERSION.pkg; nothing is written twice), and the
DirStore pieces that make the receive path cheap: write_at keeps the file
open, list() walks only the prefix's directory.  A process killed before
any store step leaves the old or the new version, whole, and a second push
completes the install."""
import os
import shutil
import subprocess
import sys
import time
import types

import pytest

from node import keys
from node.core.transfer_send import Sender
from node.host import ModuleHost
from node.push_install import PushInstaller
from node.store import DirStore
from conftest import ROOT


def pkg_files(root):
    d = os.path.join(root, "packages", "counter")
    return {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)} \
        if os.path.isdir(d) else {}


def test_write_at_keeps_the_object_open_until_it_changes(tmp_path):
    st = DirStore(str(tmp_path))
    st.write_at("incoming/a.part", 0, b"1234")
    st.write_at("incoming/a.part", 4, b"5678")
    assert list(st._open) == ["incoming/a.part"]
    assert st.read("incoming/a.part") == b"12345678"
    st.sync("incoming/a.part")
    st.rename("incoming/a.part", "incoming/a.pkg")
    assert st._open == {} and st.read("incoming/a.pkg") == b"12345678"
    # Deleted, then written again: a new file, not the unlinked one.
    st.write_at("x/b", 0, b"old")
    st.delete("x/b")
    st.write_at("x/b", 0, b"new")
    assert st.read("x/b") == b"new"
    st.write("x/b", b"replaced")                # atomic replace closes it too
    st.write_at("x/b", 0, b"R")
    assert st.read("x/b") == b"Replaced"
    for i in range(DirStore.OPEN_MAX + 3):      # bounded
        st.write_at("many/%d" % i, 0, b"x")
    assert len(st._open) == DirStore.OPEN_MAX
    assert all(st.read("many/%d" % i) == b"x" for i in range(DirStore.OPEN_MAX + 3))
    st.close()
    assert st._open == {}


def test_background_sync_travels_with_a_rename_and_is_awaited(tmp_path):
    st = DirStore(str(tmp_path))
    st.write_at("incoming/t.part", 0, b"x" * 70000)
    st.sync_soon("incoming/t.part")
    st.sync_soon("incoming/t.part")             # once is enough
    st.rename("incoming/t.part", "incoming/t.pkg")
    assert list(st._syncing) == ["incoming/t.pkg"]
    st.sync("incoming/t.pkg")                   # waits for the worker
    assert st._syncing == {}
    st.rename("incoming/t.pkg", "packages/m/1.0.0.pkg")
    assert st.read("packages/m/1.0.0.pkg") == b"x" * 70000
    st.write_at("incoming/u.part", 0, b"y")
    st.sync_soon("incoming/u.part")
    st.delete("incoming/u.part")                # dropped, the worker ends alone
    assert st._syncing == {} and st.size("incoming/u.part") == -1
    st.sync_soon("nothere")                     # absent: nothing to do
    assert st._syncing == {}
    # Written again after sync_soon: sync() must not settle for the old fsync.
    st.write_at("incoming/v.part", 0, b"1")
    st.sync_soon("incoming/v.part")
    st.write_at("incoming/v.part", 1, b"2")
    assert st._syncing["incoming/v.part"].again     # kept: its error may matter
    st.sync("incoming/v.part")
    assert st._syncing == {}
    assert st.read("incoming/v.part") == b"12"


def test_a_failed_background_fsync_is_raised_by_sync_even_after_more_writes(
        tmp_path, monkeypatch):
    """A writeback error is reported once per open file, to the descriptor
    the worker fsyncs; if sync() forgot that job when more bytes came, a
    later fsync on the original descriptor could succeed and the lost data
    would count as durable.  (EIO cannot be caused on a test machine's disk:
    os.fsync is made to fail on the worker thread only.)"""
    import threading
    real = os.fsync

    def failing(fd):
        if threading.current_thread().name.startswith("aegis-fsync"):
            raise OSError(5, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    st = DirStore(str(tmp_path))
    st.write_at("incoming/w.part", 0, b"a" * 5000)
    st.sync_soon("incoming/w.part")
    st.write_at("incoming/w.part", 5000, b"b")      # more bytes after it
    with pytest.raises(OSError, match="Input/output"):
        st.sync("incoming/w.part")
    # Carried along by a rename as well (the Receiver's part -> pkg).
    st.sync_soon("incoming/w.part")
    st.rename("incoming/w.part", "incoming/w.pkg")
    with pytest.raises(OSError, match="Input/output"):
        st.sync("incoming/w.pkg")
    st.close()


def test_background_sync_works_in_a_forked_child(tmp_path):
    st = DirStore(str(tmp_path))
    st.write_at("a", 0, b"x")
    st.sync_soon("a")
    st.sync("a")                    # the worker thread exists now
    pid = os.fork()
    if pid == 0:                    # child: the parent's worker is not here
        try:
            st.write_at("b", 0, b"y")
            st.sync_soon("b")
            st.sync("b")
        finally:
            os._exit(0 if st.read("b") == b"y" else 1)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("background fsync hung in a forked child")
        time.sleep(0.01)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_a_failed_background_fsync_is_raised_by_sync():
    from node.store import _Fsync
    r, w = os.pipe()                            # fsync on a pipe: EINVAL
    os.close(w)
    job = _Fsync(r)
    try:
        job.wait()
    except OSError:
        pass
    else:
        raise AssertionError("fsync error not raised")


def test_list_walks_only_the_prefix_directory(tmp_path):
    st = DirStore(str(tmp_path))
    for name in ("incoming/a.part", "incoming/a.state", "packages/m/1.0.0.pkg",
                 "modules/m.cbor", "incomingx"):
        st.write(name, b"x")
    assert st.list("incoming/") == ["incoming/a.part", "incoming/a.state"]
    assert st.list("incoming/a.p") == ["incoming/a.part"]
    assert st.list("inc") == ["incoming/a.part", "incoming/a.state", "incomingx"]
    assert st.list("nothere/") == []
    assert len(st.list("")) == 5


def test_installed_push_is_renamed_into_place(tmp_path, signer):
    """The PushInstaller path: the received file becomes the stored package,
    the last ack goes out before the install, the result after it."""
    root = str(tmp_path / "store")
    st = DirStore(root)
    host = ModuleHost(st, "n1", keys.load_verifiers([signer.pub]))
    gw = types.SimpleNamespace(host=host, store=st, log=lambda *a, **k: None,
                               kick=lambda: None)
    inst = PushInstaller(gw, 1 << 20)
    data = signer.example("counter", version="1.0.1")
    snd = Sender(data, chunk=1024, window=8, eager=True)
    sent = []       # (message type, module active when it was sent)

    def send():
        from node.core import cbor
        for _tid, b in inst.rx.messages_to_send():
            mod = host.modules.get("counter")
            sent.append((cbor.loads(b)["t"], mod.active.version if mod else None))
            snd.receive_data(b, 0)
    for step in range(1000):
        if snd.result is not None:
            break
        for m in snd.messages_to_send(step):
            inst.rx.receive_data(m, step)
            inst.drain_events({}, send)
            send()
    assert snd.result == (True, "running"), snd.result
    assert host.modules["counter"].active.version == "1.0.1"
    assert pkg_files(root) == {"1.0.1.pkg": data}
    assert st.list("incoming/") == []
    assert not [f for _, _, fs in os.walk(root) for f in fs if f.endswith(".aegis-tmp")]
    # The ack saying "all there" left before the install, the result after.
    assert ("ack", None) in sent and sent[-1] == ("result", "1.0.1")
    assert sent.index(("ack", None)) < len(sent) - 1


def _installer(root, verifiers):
    st = DirStore(root)
    host = ModuleHost(st, "n1", verifiers)
    gw = types.SimpleNamespace(host=host, store=st, log=lambda *a, **k: None,
                               kick=lambda: None)
    return PushInstaller(gw, 1 << 20)


def _push(inst, data, chunk=1024):
    """Run one transfer to its result; -> (result, chunks the node stored)."""
    snd = Sender(data, chunk=chunk, window=8, eager=True)
    stored = 0
    for step in range(1000):
        if snd.result is not None:
            break
        for m in snd.messages_to_send(step):
            before = inst.rx.received_head(snd.id)[1]
            inst.rx.receive_data(m, step)
            stored += inst.rx.received_head(snd.id)[1] > before
            inst.drain_events({})
            for _tid, b in inst.rx.messages_to_send():
                snd.receive_data(b, step)
    return snd.result, stored


def test_install_on_a_later_turn_sends_the_last_ack_first(tmp_path, signer):
    """As on a gateway (later = loop.call_soon): the completed package is
    installed on a later turn, after the replies queued before it left; an
    install that blows up still answers the pusher."""
    inst = _installer(str(tmp_path / "store"), keys.load_verifiers([signer.pub]))
    turns = []
    inst.later = lambda fn, *a: turns.append((fn, a))
    log = []
    snd = Sender(signer.example("counter", version="1.0.1"), chunk=256, window=64, eager=True)

    def send():
        from node.core import cbor
        for _tid, b in inst.rx.messages_to_send():
            log.append(cbor.loads(b)["t"])
            snd.receive_data(b, 0)
    for m in snd.messages_to_send(0):
        inst.rx.receive_data(m, 0)
        inst.drain_events({}, send)
        send()
    assert len(turns) == 1 and snd.result is None and log[-1] == "ack"
    assert inst.host.modules == {}          # not installed yet
    fn, a = turns.pop()
    fn(*a)
    assert snd.result == (True, "running") and log[-1] == "result"
    # A bug in the install (here: the host goes away) is answered, not lost.
    snd = Sender(signer.example("counter", version="1.0.2"), chunk=256, window=64, eager=True)
    for m in snd.messages_to_send(0):
        inst.rx.receive_data(m, 0)
        inst.drain_events({}, send)
        send()
    inst.host = None
    fn, a = turns.pop()
    fn(*a)
    assert snd.result[0] is False and "internal error" in snd.result[1], snd.result


def test_signed_header_checked_once_as_the_push_arrives(tmp_path, signer):
    calls = []
    ((kid, verify),) = keys.load_verifiers([signer.pub]).items()
    counting = {kid: lambda sig, msg: calls.append(1) or verify(sig, msg)}
    inst = _installer(str(tmp_path / "store"), counting)
    res, _ = _push(inst, signer.example("counter", version="1.0.1"))
    assert res == (True, "running")
    assert len(calls) == 1          # early, not again at the install
    assert inst._heads == {}


def test_bad_signature_refused_after_the_first_chunk(tmp_path, signer):
    from conftest import Signer
    stranger = Signer(str(tmp_path / "stranger"))
    inst = _installer(str(tmp_path / "store"), keys.load_verifiers([signer.pub]))
    data = stranger.example("counter", version="1.0.1")
    head = 12 + int.from_bytes(data[8:12], "big")
    assert 256 < head <= 512 and len(data) > 3 * 256
    (ok, why), stored = _push(inst, data, chunk=256)
    assert not ok and "unknown key" in why, why
    assert stored == 2              # refused once the header was in
    assert inst.counts["refused"] == 1 and inst.host.modules == {}
    assert inst.gw.store.list("incoming/") == []


def test_checked_head_forgotten_when_the_transfer_fails_its_hash(tmp_path, signer):
    """A pusher whose offered sha256 lies: the header (validly signed) is
    checked early, then the whole fails the hash check and is dropped.  The
    early check's record (header bytes, parsed header) must go with it, or
    every such push would leave one behind for good."""
    inst = _installer(str(tmp_path / "store"), keys.load_verifiers([signer.pub]))
    data = signer.example("counter", version="1.0.1")
    snd = Sender(data, chunk=256, window=64, eager=True, sha256=b"\x00" * 32)
    checked = False
    for step in range(1000):
        if snd.result is not None:
            break
        for m in snd.messages_to_send(step):
            inst.rx.receive_data(m, step)
            inst.drain_events({})
            checked = checked or any(h[2] for h in inst._heads.values())
            for _tid, b in inst.rx.messages_to_send():
                snd.receive_data(b, step)
    assert checked                  # the header was checked as it arrived
    assert snd.result[0] is False and "sha256 mismatch" in snd.result[1], snd.result
    assert inst._heads == {}
    assert inst.gw.store.list("incoming/") == []


def test_admission_checks_again_when_the_header_differs(tmp_path, signer):
    from conftest import Signer
    from node.admission import Limits, admit, check_head
    from node.core.package import PackageError
    vs = keys.load_verifiers([signer.pub])
    good = signer.example("counter", version="1.0.1")
    checked = check_head(good[:100], vs)
    assert checked is None          # header not complete yet
    checked = check_head(good[:4096], vs)
    assert admit(good, vs, Limits(), checked)[0].version == "1.0.1"
    # Another package under a checked header: the full check runs (and fails).
    other = Signer(str(tmp_path / "other")).example("counter", version="1.0.1")
    with pytest.raises(PackageError, match="unknown key"):
        admit(other, vs, Limits(), checked)
    # Same header, other wasm: the signed hash refuses it.
    head = checked[0]
    with pytest.raises(PackageError, match="does not match|manifest says"):
        admit(head + good[len(head):-1] + b"\x01", vs, Limits(), checked)
    # Keys reloaded since the check: full check.
    vs2 = keys.load_verifiers([signer.pub])
    assert admit(good, vs2, Limits(), checked)[0].version == "1.0.1"


def _child(root, pkg, pub, crash_at):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "push_crash_proc.py"),
                           root, pkg, pub, str(crash_at)],
                          capture_output=True, text=True, timeout=120)


def test_killed_at_any_store_step_leaves_old_or_new_whole(tmp_path, signer):
    base = str(tmp_path / "base")
    old = signer.example("counter", version="1.0.0")
    new = signer.example("counter", version="1.0.1")
    h = ModuleHost(DirStore(base), "n1", keys.load_verifiers([signer.pub]))
    h.install(old)
    h.flush()
    pkg = str(tmp_path / "new.pkg")
    with open(pkg, "wb") as f:
        f.write(new)
    # How many store mutations a whole push makes (no crash).
    probe = str(tmp_path / "probe")
    shutil.copytree(base, probe)
    r = _child(probe, pkg, signer.pub, 0)
    assert r.returncode == 0 and "result True" in r.stdout, r.stderr
    steps = int(r.stdout.split("mutations ")[1].split()[0])
    assert steps > 5
    outcomes = set()
    for n in range(1, steps + 1):
        d = str(tmp_path / ("crash%d" % n))
        shutil.copytree(base, d)
        r = _child(d, pkg, signer.pub, n)
        assert r.returncode == 9, (n, r.stdout, r.stderr)
        host = ModuleHost(DirStore(d), "n1", keys.load_verifiers([signer.pub]))
        host.restore()
        active = host.modules["counter"].active.version
        assert active in ("1.0.0", "1.0.1"), n
        outcomes.add(active)
        files = pkg_files(d)
        # Never a half package: each stored file is one of the two, whole.
        assert files.get("1.0.0.pkg") == old, n
        assert files.get("1.0.1.pkg", new) == new, n
        assert "%s.pkg" % active in files
        # The push again (a new CLI run) finishes the job.
        r = _child(d, pkg, signer.pub, 0)
        assert r.returncode == 0 and "result True" in r.stdout, (n, r.stdout, r.stderr)
        host = ModuleHost(DirStore(d), "n1", keys.load_verifiers([signer.pub]))
        host.restore()
        assert host.modules["counter"].active.version == "1.0.1", n
        assert pkg_files(d) == {"1.0.0.pkg": old, "1.0.1.pkg": new}, n
        assert DirStore(d).list("incoming/") == [], n
    assert outcomes == {"1.0.0", "1.0.1"}
