# Local event bus: MQTT-style topic filters ("+" one level, "#" the rest).
#
# Matching is cached per topic: a node sees few distinct topics many times,
# so the hot path is one dict lookup.  The cache is dropped on any
# (un)subscribe and bounded so hostile topic floods cannot grow it.
try:
    from micropython import const
except ImportError:  # CPython: const(n) is n, as int(n) is (no def: a def costs boards heap)
    const = int

_MAX_TOPIC = const(255)     # bytes of UTF-8 (forwarding.py's topic limit counts on it)
_CACHE_MAX = const(4096)


class TopicError(ValueError):
    pass


def check_topic(topic):
    """Raise TopicError unless `topic` (str) is a concrete publish topic."""
    if type(topic) is not str:
        raise TopicError("topic must be text")
    n = len(topic.encode())
    if n == 0 or n > _MAX_TOPIC:
        raise TopicError("topic must be 1..%d bytes, got %d" % (_MAX_TOPIC, n))
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise TopicError("topic %r must not contain '+', '#' or NUL" % topic)
    for lvl in topic.split("/"):
        if not lvl:
            raise TopicError("topic %r has an empty level" % topic)


def check_filter(filter):
    """Raise TopicError unless `filter` is a valid subscription filter."""
    if type(filter) is not str:
        raise TopicError("filter must be text")
    n = len(filter.encode())
    if n == 0 or n > _MAX_TOPIC:
        raise TopicError("filter must be 1..%d bytes" % _MAX_TOPIC)
    lv = filter.split("/")
    for i in range(len(lv)):
        s = lv[i]
        if s == "#":
            if i != len(lv) - 1:
                raise TopicError("'#' must be the last level in %r" % filter)
        elif s == "+":
            pass
        elif "+" in s or "#" in s:
            raise TopicError("wildcard must fill a whole level in %r" % filter)
        elif not s:
            raise TopicError("filter %r has an empty level" % filter)


def matches(filter, topic):
    fl = filter.split("/")
    tl = topic.split("/")
    # Wildcards at the first level never match "$"-topics (MQTT rule).
    if tl[0][:1] == "$" and (fl[0] == "+" or fl[0] == "#"):
        return False
    i = 0
    for f in fl:
        if f == "#":
            return True
        if i >= len(tl):
            return False
        if f != "+" and f != tl[i]:
            return False
        i += 1
    return i == len(tl)


class Bus:
    """Subscriptions of opaque subscriber objects to filters."""

    def __init__(self):
        self._subs = []  # [(filter, subscriber)], in subscription order
        self._cache = {}

    def subscribe(self, filter, sub):
        check_filter(filter)
        self._subs.append((filter, sub))
        self._cache = {}

    def unsubscribe(self, sub):
        self._subs = [x for x in self._subs if x[1] is not sub]
        self._cache = {}

    def match(self, topic):
        """Subscribers whose filters match `topic`, each once, in order."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        out = []
        for filter, sub in self._subs:
            if sub not in out and matches(filter, topic):
                out.append(sub)
        hit = tuple(out)
        if len(self._cache) >= _CACHE_MAX:
            self._cache = {}
        self._cache[topic] = hit
        return hit
