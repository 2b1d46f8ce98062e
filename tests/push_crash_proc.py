"""Child process for tests/test_push_handoff.py: receive a package over the
transfer protocol into a real DirStore and install it through the real
PushInstaller and host (the file handed to the store by rename), dying
with os._exit -- a kill -9, no cleanup -- right before the store's Nth
mutating call when CRASH_AT = N > 0.

usage: push_crash_proc.py STORE_DIR PACKAGE PUBKEY CRASH_AT
Prints "mutations N" and "result OK DETAIL" when it was not crashed."""
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from node import keys  # noqa: E402
from node.core.transfer_send import Sender  # noqa: E402
from node.host import ModuleHost  # noqa: E402
from node.push_install import PushInstaller  # noqa: E402
from node.store import DirStore  # noqa: E402

MUTATING = ("write", "write_at", "append", "rename", "delete", "sync")


def crashing_store(root, crash_at, count):
    st = DirStore(root)
    for name in MUTATING:
        fn = getattr(st, name)

        def wrapped(*a, _fn=fn, **kw):
            count[0] += 1
            if count[0] == crash_at:
                os._exit(9)
            return _fn(*a, **kw)
        setattr(st, name, wrapped)
    return st


def main():
    root, pkg_path, pub, crash_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with open(pkg_path, "rb") as f:
        data = f.read()
    count = [0]
    st = crashing_store(root, crash_at, count)
    host = ModuleHost(st, "n1", keys.load_verifiers([pub]))
    host.restore()
    gw = types.SimpleNamespace(host=host, store=st, log=lambda *a, **k: None,
                               kick=lambda: None)
    inst = PushInstaller(gw, 1 << 20)
    snd = Sender(data, chunk=1024, window=8, eager=True)
    now = 0
    for _ in range(10000):
        if snd.result is not None:
            break
        now += 10
        for m in snd.messages_to_send(now):
            inst.rx.receive_data(m, now)
            inst.drain_events({})
            for _tid, reply in inst.rx.messages_to_send():
                snd.receive_data(reply, now)
    print("mutations", count[0])
    print("result", snd.result[0], snd.result[1])


if __name__ == "__main__":
    main()
