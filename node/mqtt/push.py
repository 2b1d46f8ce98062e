"""`aegis push`: stream a signed package to nodes over MQTT.

One transfer.Sender per target node, each on the node's own
aegis/<fleet>/node/<id>/deploy topic (replies on .../deploy/reply).  Targets
come from the retained statuses: a node id, or every online member of a
group.  Per-node senders (not one group-wide stream) because every node
resumes from its own set of missing chunks and may ask for its own chunk
size; the broker fans out nothing, so a group of N costs N streams.
"""
import sys
import time

from node.core import fleet as F, fleetwatch as FW
from node.core import package as pk
from node.core import transfer as T
from node.core.transfer_send import Sender
from node.mqtt.operator import Session, StatusWatch


class PushError(Exception):
    pass


class Target:
    def __init__(self, node, fleet, sender, first=()):
        self.node, self.sender = node, sender
        self.first = list(first)    # messages built before the statuses came
        self.out = F.deploy_topic(fleet, node)
        self.reply = F.reply_topic(fleet, node)
        self.result = None          # (ok, detail)
        self.shown = -1
        self.errors = []


def targets_for(to, statuses, fleet):
    """Node ids to push to (online ones; `to` is NODE or group:NAME)."""
    if to.startswith("group:"):
        g = to[6:]
        F.group_topic(fleet, g)     # checks the name
        ids = sorted(n for n, s in statuses.items() if s["online"] and g in s["groups"])
        if not ids:
            raise PushError("no online node of fleet %r lists group %r in its status"
                            % (fleet, g))
        return ids
    F.deploy_topic(fleet, to)
    s = statuses.get(to)
    if s is None:
        raise PushError("node %r has no status in fleet %r (never connected to this broker?)"
                        % (to, fleet))
    if not s["online"]:
        raise PushError("node %r is offline (its last will says so)" % to)
    return [to]


def push(url, fleet, data, to, chunk=4096, window=16, timeout_s=120.0, log=None, tls=None,
         hdr=None):
    """Push package bytes; returns {node: (ok, detail, chunks_sent, n)}.
    `hdr` (name, version) for other signed files, e.g. runtime bundles."""
    tls = tls or {}
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        hdr = hdr or pk.parse_header(data[:12 + pk.HEADER_MAX])
    except pk.PackageError as e:
        hint = "; it is a runtime bundle: aegis push-runtime --bundle FILE" \
            if data[:8] == b"AEGISRT1" else ""
        raise PushError("not a package: %s%s" % (e, hint))
    # One connection for both steps: the statuses (which nodes, their
    # chunk sizes) and the replies of every node, subscribed in the same
    # request, so the replies subscription is active before the first offer.
    # One named node: only its status and replies (a big fleet's other
    # statuses are not worth waiting for); a group needs every status.
    one = None if to.startswith("group:") else to
    replies = F.reply_topic(fleet, one) if one else FW.reply_filter(fleet)
    watch = StatusWatch(fleet, node=one)
    targets, by_reply = {}, {}

    def on_message(topic, payload):
        t = by_reply.get(topic)
        if t is not None:
            t.sender.receive_data(payload, int(time.monotonic() * 1000))
        else:
            watch.on_message(topic, payload)

    def on_connect():
        watch.subscribe(sess.link, [replies])
        if sess.link.connects > 1:
            log("reconnected to %s; resuming" % url)
            for t in targets.values():
                t.first = []        # the re-offer below supersedes them
                t.sender.reconnected(int(time.monotonic() * 1000))

    sess = Session(url, on_message, on_connect, **tls).start()
    try:
        # While the connection is made: hash the package and build the offer
        # and first window for the usual case (one node that takes this
        # chunk size and does not run this version yet).
        c0 = max(T.MIN_CHUNK, min(chunk, T.MAX_CHUNK))
        guess = Sender(data, chunk=c0, window=window, name=hdr.name, version=hdr.version,
                       timeout=3000, max_retries=20, eager=True)
        early = guess.messages_to_send(int(time.monotonic() * 1000))
        # One named node: its retained status (sent right after the SUBACK)
        # is all we need, not the round trip marking the end of them all.
        watch.wait(sess, url, 5.0, until=one and (lambda: one in watch.nodes))
        ids = targets_for(to, watch.nodes, fleet)
        for node in ids:
            adv = watch.nodes[node]["max_chunk"] or T.MAX_CHUNK
            c = max(T.MIN_CHUNK, min(chunk, adv))
            # eager: MQTT keeps one client's messages on a topic in order,
            # so the first window can follow the offer without waiting --
            # unless the node says it runs this version (likely a no-op:
            # then the offer alone answers it, without a chunk).
            running = any(m.get("name") == hdr.name and m.get("version") == hdr.version
                          for m in watch.nodes[node]["modules"])
            if len(ids) == 1 and c == c0 and not running:
                guess.touch(int(time.monotonic() * 1000))
                targets[node] = Target(node, fleet, guess, early)
                continue
            s = Sender(data, chunk=c, window=window, name=hdr.name, version=hdr.version,
                       timeout=3000, max_retries=20, eager=not running, sha256=guess.sha256)
            targets[node] = Target(node, fleet, s)
        by_reply.update((t.reply, t) for t in targets.values())
        log("pushing %s@%s (%d bytes) to %s" % (hdr.name, hdr.version, len(data),
                                                ", ".join(sorted(targets))))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = int(time.monotonic() * 1000)
            for t in targets.values():
                _step(sess, t, now, log)
            if all(t.result is not None for t in targets.values()):
                break
            sess.run_once(0.05, ack_now=True)
    finally:
        sess.stop()
    out = {}
    for t in targets.values():
        s = t.sender
        res = t.result or (False, "timed out after %.0fs (%d%% confirmed)"
                           % (timeout_s, 100 * s.confirmed // s.size))
        out[t.node] = (res[0], res[1], s.chunks_sent, s.n)
    return hdr, out


def _step(sess, t, now, log):
    s = t.sender
    if t.result is not None:
        return
    if sess.link.connected:
        # Before subscribing completes, replies could be lost; the sender's
        # timeout re-offers, so sending right away is still safe.
        msgs, t.first = t.first + s.messages_to_send(now), []
        for m in msgs:
            sess.link.publish(t.out, m, qos=1)
    while True:
        ev = s.next_event()
        if ev is None:
            break
        if isinstance(ev, T.Progress):
            pct = 100 * ev.done // max(1, ev.total)
            if pct // 10 != t.shown // 10 or pct == 100 and t.shown != 100:
                t.shown = pct
                log("%s: %3d%% %s %d/%d bytes" % (t.node, pct, _bar(pct), ev.done, ev.total))
        elif isinstance(ev, T.Result):
            t.result = (ev.ok, ev.detail)
        elif isinstance(ev, T.TransferError):
            if "another transfer" not in ev.text and len(t.errors) < 5:
                t.errors.append(ev.text)
                log("%s: %s" % (t.node, ev.text))


def _bar(pct, w=20):
    n = pct * w // 100
    return "[" + "#" * n + "." * (w - n) + "]"
