from node.core.bus import Bus, TopicError, check_filter, check_topic, matches
from node.core.ring import Ring
from helpers import raises


def test_filter_matching():
    cases = [
        ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
        ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "x/y", True),
        ("+/+", "a/b", True), ("+", "a/b", False), ("a/+/c", "a/x/c", True),
        ("#", "$aegis/x", False), ("+/x", "$aegis/x", False), ("$aegis/#", "$aegis/x", True),
        ("a/b", "a/b/c", False), ("sensor/+/temp", "sensor/k1/temp", True),
    ]
    for f, t, want in cases:
        assert matches(f, t) == want, (f, t)


def test_bad_topics_and_filters():
    for t in ["", "a/+", "a/#", "a//b", "/a", "a/", "x" * 256, 5]:
        raises(TopicError, check_topic, t)
    for f in ["", "a/#/b", "a/b#", "a+/b", "a//b"]:
        raises(TopicError, check_filter, f)
    check_topic("a/b/c")
    check_filter("a/+/#")


def test_bus_delivers_once_in_order_and_caches():
    b = Bus()
    b.subscribe("a/#", "s1")
    b.subscribe("a/+", "s2")
    b.subscribe("a/b", "s1")
    assert b.match("a/b") == ("s1", "s2")
    assert b.match("a/b/c") == ("s1",)
    assert b.match("z") == ()
    b.unsubscribe("s1")
    assert b.match("a/b") == ("s2",)
    raises(TopicError, b.subscribe, "a/#/x", "s3")


def test_bus_cache_bounded():
    b = Bus()
    b.subscribe("#", "s")
    for i in range(5000):
        b.match("t/%d" % i)
    assert len(b._cache) <= 4096


def test_ring():
    r = Ring(3)
    for i in range(5):
        r.append(i)
    assert len(r) == 3
    assert r.since(0) == ([2, 3, 4], 2)
    assert r.since(4) == ([4], 4)
    assert r.since(5) == ([], 5)
    raises(ValueError, Ring, 0)
