# Fleet topic names, the node status a board writes (fleet.py) and what an
# operator reads back (fleetwatch.py).  Runs under pytest and mp_run.py.
from node.core import cbor, fleet, fleetwatch
from node.core.fleet import EnvelopeError
from helpers import raises


def test_topics():
    assert fleet.status_topic("f", "n1") == "aegis/f/node/n1/status"
    assert fleet.deploy_topic("f", "n1") == "aegis/f/node/n1/deploy"
    assert fleet.reply_topic("f", "n1") == "aegis/f/node/n1/deploy/reply"
    assert fleet.group_topic("f", "g") == "aegis/f/group/g/deploy"
    assert fleetwatch.reply_filter("f") == "aegis/f/node/+/deploy/reply"
    assert fleetwatch.status_filter("f") == "aegis/f/node/+/status"
    for fn in (fleet.status_topic, fleet.deploy_topic, fleet.reply_topic, fleet.group_topic):
        raises(EnvelopeError, fn, "f/x", "n")
        raises(EnvelopeError, fn, "f", "+")
        raises(EnvelopeError, fn, "f", "..")
    raises(EnvelopeError, fleetwatch.status_filter, "#")


def test_status_round_trip_and_defaults():
    b = fleet.encode_status("n1", 1, ["g"], [{"name": "m", "version": "1.0.0", "state": "running"}],
                            4096, {"dups": 2}, 7, {"mode": "board"})
    s = fleetwatch.decode_status(b)
    assert s == {"node": "n1", "online": True, "groups": ["g"], "max_chunk": 4096, "ts": 7,
                 "modules": [{"name": "m", "version": "1.0.0", "state": "running"}],
                 "counts": {"dups": 2}, "mode": "board"}
    s = fleetwatch.decode_status(cbor.dumps({"node": "n2", "online": False}))
    assert s["groups"] == [] and s["modules"] == [] and s["counts"] == {} and s["ts"] == 0


def test_hostile_statuses_refused():
    ok = {"node": "n", "online": True}
    bad = [b"\xff", b"x" * 16385, cbor.dumps([1]), cbor.dumps({"online": True}),
           cbor.dumps({"node": "a/b", "online": True}), cbor.dumps({"node": "n", "online": 1})]
    for k, v in (("groups", "g"), ("modules", {}), ("max_chunk", "1"), ("counts", []),
                 ("ts", 1.5), ("modules", [1]), ("modules", [{"name": "m"}])):
        d = dict(ok)
        d[k] = v
        bad.append(cbor.dumps(d))
    for b in bad:
        raises(EnvelopeError, fleetwatch.decode_status, b)
