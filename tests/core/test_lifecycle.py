from node.core import lifecycle as lc
from helpers import raises


def test_happy_path_and_swap():
    v = lc.Lifecycle()
    for s in (lc.RECEIVING, lc.VERIFIED, lc.LOADED, lc.STARTING, lc.RUNNING, lc.DRAINING, lc.STOPPED):
        v.to(s)
    assert v.state == lc.STOPPED
    assert v.history[0] == lc.OFFERED


def test_illegal_moves_raise():
    v = lc.Lifecycle(lc.VERIFIED)
    raises(lc.LifecycleError, v.to, lc.RUNNING)
    v.to(lc.FAILED, "bad")
    raises(lc.LifecycleError, v.to, lc.RUNNING)
    assert v.reason == "bad"
    raises(lc.LifecycleError, lc.Lifecycle, "nope")


def test_every_state_has_a_row():
    for s, nxt in lc.TRANSITIONS.items():
        for n in nxt:
            assert n in lc.TRANSITIONS


def test_trap_policy_window():
    p = lc.TrapPolicy(3, 10000)
    assert not p.record(0)
    assert not p.record(5000)
    assert not p.record(15001)  # the first two left the window
    assert not p.record(16000)
    assert p.record(17000)
    q = lc.TrapPolicy(3, 10000)
    assert not q.record(0) and not q.record(9000)
    assert q.record(9500)
