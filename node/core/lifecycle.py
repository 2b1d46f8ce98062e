# The module lifecycle: one transition table, in the style of h11's _state.
#
# Every installed version of a module walks this table; the host moves it
# and records why.  An illegal move is a bug in the host, so it raises.
#
#   offered -> receiving -> verified -> loaded -> starting -> running
#   running -> draining -> stopped            (replaced or removed cleanly)
#   running -> rolled_back                    (trap storm: previous restored)
#   any step before running -> failed         (refused: reason recorded)
#   stopped -> starting                       (roll back to a kept version)

OFFERED = "offered"
RECEIVING = "receiving"
VERIFIED = "verified"
LOADED = "loaded"
STARTING = "starting"
RUNNING = "running"
DRAINING = "draining"
STOPPED = "stopped"
FAILED = "failed"
ROLLED_BACK = "rolled_back"

TRANSITIONS = {
    OFFERED: (RECEIVING, VERIFIED, FAILED),
    RECEIVING: (VERIFIED, FAILED),
    VERIFIED: (LOADED, FAILED),
    LOADED: (STARTING, FAILED),
    STARTING: (RUNNING, FAILED),
    RUNNING: (DRAINING, ROLLED_BACK, FAILED),
    DRAINING: (STOPPED,),
    STOPPED: (LOADED, STARTING),
    FAILED: (),
    ROLLED_BACK: (LOADED,),
}

# States in which a version may be the one handling events.
SERVING = (RUNNING,)


class LifecycleError(Exception):
    pass


class Lifecycle:
    def __init__(self, state=OFFERED):
        if state not in TRANSITIONS:
            raise LifecycleError("unknown state %r" % state)
        self.state = state
        self.reason = ""
        self.history = [state]

    def to(self, new, reason=""):
        if new not in TRANSITIONS.get(self.state, ()):
            raise LifecycleError("illegal transition %s -> %s" % (self.state, new))
        self.state = new
        self.reason = reason
        self.history.append(new)
        if len(self.history) > 32:
            self.history = self.history[-32:]


class TrapPolicy:
    """Roll back when a new version traps `max_traps` times within
    `window_ms` (defaults: 3 in 10 s)."""

    def __init__(self, max_traps=3, window_ms=10000):
        self.max_traps = max_traps
        self.window_ms = window_ms
        self._times = []

    def record(self, now_ms):
        """Count a trap at `now_ms`; True when the version must roll back."""
        t = [x for x in self._times if now_ms - x < self.window_ms]
        t.append(now_ms)
        self._times = t
        return len(t) >= self.max_traps

    def count(self):
        return len(self._times)
