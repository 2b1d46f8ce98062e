"""Proxy host: runs MicroPython boards' modules on a gateway (docs/BOARDS.md).

Stock board firmware has no wasm3, so each served board gets a full
`ModuleHost` here (its own store under `<store_dir>/boards/<id>`, real
wasm3, the same signature, import and lifecycle checks as a gateway), and
the board keeps everything a module touches: its events come up from the
board's bus, its emits go down and leave the board under the board's own
id, seq and outbox, and its port calls are answered by the board's pins.

Threads: paho's network thread routes messages; each board has one worker
thread owning its ModuleHost (a module host is single-threaded).  A port
call blocks that worker until the board answers or the call times out
(EIO), which is what the ABI's synchronous `call` means; other boards'
workers go on.  Port results are handed to the waiting worker straight
from the paho thread, never through the worker's own queue.

Topics (per board, see node/board/proxy.py for the board side):
    aegis/<fleet>/node/<board>/proxy/pkg        offer/chunk   board -> host
    aegis/<fleet>/node/<board>/proxy/pkg/reply  want/ack/result
    aegis/<fleet>/node/<board>/proxy/up         {t: ev | res | stmt}  board -> host
    aegis/<fleet>/node/<board>/proxy/down       {t: emit | call} host -> board
"""
import hashlib
import itertools
import os
import queue
import threading
import time
from collections import deque

from node import keys
from node.core import abi as A, cbor, transfer as T
from node.core.envelope import check_node_id
from node.host import InstallError, ModuleHost
from node.store import DirStore

UP_MOD = "board"        # `mod` of events that came up from the board
PENDING_MAX = 1000      # emits kept while the link is down
QUEUE_MAX = 10000       # messages from the board waiting for the worker


def now_ms():
    return int(time.monotonic() * 1000)


class ProxiedHost(ModuleHost):
    """A ModuleHost whose port calls travel to the board."""

    def on_call(self, abi, port, data):
        return self.proxy.call(abi.label, port, data)


class BoardProxy:
    def __init__(self, owner, board_id, store_dir, verifiers, call_timeout_s):
        check_node_id(board_id, "board")
        self.owner, self.id, self.log = owner, board_id, owner.log
        base = "aegis/%s/node/%s/proxy/" % (owner.fleet, board_id)
        self.t_pkg, self.t_reply = base + "pkg", base + "pkg/reply"
        self.t_up, self.t_down = base + "up", base + "down"
        self.store = DirStore(os.path.join(store_dir, "boards", board_id))
        self.host = ProxiedHost(self.store, board_id, verifiers,
                                logger=lambda lv, msg, **kw: self.log(lv, msg, board=board_id, **kw))
        self.host.proxy = self
        self.host.taps.append(self._tap)
        self.rx = T.Receiver(self.store, max_size=1 << 20, is_active=self._is_active)
        self.call_timeout = call_timeout_s
        self.q = queue.Queue(QUEUE_MAX)   # bounded: a flood is dropped and counted
        self._stopping = False
        self._ids = itertools.count(1)
        self._waiting = {}      # call id -> [threading.Event, result]
        self._pending = deque((), PENDING_MAX)  # emits not yet handed to paho
        # QoS 1 redelivers: events up are run once per (board boot, n);
        # emits down carry (our boot, n) for the board to do the same.
        self._seen, self._seen_set = deque(), set()
        self._boot = int.from_bytes(os.urandom(4), "big") >> 2
        self._n = 0
        self.counts = {"events_up": 0, "emits_down": 0, "calls": 0, "call_timeouts": 0,
                       "installed": 0, "refused": 0, "pending_dropped": 0, "queue_full": 0,
                       "dups": 0}
        self._thread = threading.Thread(target=self._work, name="proxy-" + board_id,
                                        daemon=True)

    def topics(self):
        return [self.t_pkg, self.t_up]

    # ---- paho thread ---------------------------------------------------
    def route(self, topic, payload):
        if topic == self.t_up and payload[:1] and payload[:1][0] >> 5 == 5:
            try:
                m = cbor.loads(payload)
            except ValueError:
                return
            if type(m) is dict and m.get("t") == "res":
                w = self._waiting.get(m.get("id"))
                if w is not None:
                    w[1] = m.get("r")
                    w[0].set()
                return
            self._put(("up", m))
        elif topic == self.t_pkg:
            self._put(("pkg", payload))

    def _put(self, item):
        try:
            self.q.put_nowait(item)
        except queue.Full:
            self.counts["queue_full"] += 1
            if self.counts["queue_full"] in (1, 1000):
                self.log("warn", "board messages dropped: worker behind", board=self.id,
                         total=self.counts["queue_full"])

    # ---- worker thread -------------------------------------------------
    def start(self):
        self._thread.start()

    def _work(self):
        self.host.restore()
        last_tick = now_ms()
        while True:
            try:
                item = self.q.get(timeout=1.0)
            except queue.Empty:
                item = None
            if self._stopping:
                return
            try:
                if item is not None:
                    self._handle(*item)
                if now_ms() - last_tick >= 1000:
                    last_tick = now_ms()
                    self.rx.tick(last_tick)
                    self._replies()
                self._flush_pending()
            except Exception as e:      # one bad message must not stop the board's host
                self.log("error", "proxy host step failed", board=self.id, error=repr(e))

    def stop(self):
        self._stopping = True
        try:
            self.q.put_nowait(("reconnected", None))    # wake the worker
        except queue.Full:
            pass
        self._thread.join(5)

    def _handle(self, kind, m):
        if kind == "pkg":
            self.rx.receive_data(m, now_ms())
            self._drain_rx()
            return
        if kind == "reconnected":
            self._flush_pending()
            return
        if type(m) is dict and m.get("t") == "stmt" and type(m.get("s")) is bytes:
            self._statement(m["s"])
            return
        if type(m) is not dict or m.get("t") != "ev":
            return
        topic, data, src = m.get("topic"), m.get("d"), m.get("src")
        if type(topic) is not str or type(data) is not bytes or type(src) is not str:
            return
        key = (m.get("b"), m.get("n"))
        if key in self._seen_set:
            self.counts["dups"] += 1
            return
        self._seen.append(key)
        self._seen_set.add(key)
        if len(self._seen) > 4096:
            self._seen_set.discard(self._seen.popleft())
        try:
            self.host.publish(topic, data, src=src, mod=UP_MOD)
        except (ValueError, OverflowError) as e:
            self.log("warn", "board event refused", board=self.id, topic=topic, error=str(e))
            return
        self.counts["events_up"] += 1
        self.host.pump()

    def _statement(self, stmt):
        """A signed rollback/removal the board accepted and passed on: check
        it again here (signature, nonce, active version) and apply it to
        this host's copy of the board's module.  A rollback's handover
        follows from the board, answered at once when this switched."""
        from node.admission import apply_remove
        from node.core.rollback import peek_op
        op = peek_op(stmt)
        try:
            r = apply_remove(self.host, stmt) if op == "remove" else self.host.rollback(stmt)
        except (InstallError, ValueError) as e:
            self.log("warn", "board statement refused", board=self.id, op=op, reason=str(e))
            return
        self.log("info", "board statement applied", board=self.id, op=op,
                 module="%s@%s" % (r["name"], r["version"]))
        self.host.pump()

    def _drain_rx(self):
        while True:
            ev = self.rx.next_event()
            if ev is None:
                break
            if isinstance(ev, T.Complete):
                self._install(ev)
            elif isinstance(ev, T.TransferError):
                self.log("warn", "handover problem", board=self.id, error=ev.text)
        self._replies()

    def _replies(self):
        for _, b in self.rx.messages_to_send():
            self.owner.link.publish(self.t_reply, b, qos=1)

    def _is_active(self, tid, name, version, sha):
        mod = self.host.modules.get(name)
        slot = mod.active if mod else None
        if slot is None or slot.version != version:
            return None
        data = self.store.read("packages/%s/%s.pkg" % (name, version))
        if data is None or hashlib.sha256(data).digest() != sha:
            return None
        return "running on %s" % self.owner.node_id

    def _install(self, c):
        data = self.store.read(c.store_name)
        try:
            if data is None:
                raise InstallError("handed-over package vanished")
            r = self.host.install(data)
        except (InstallError, ValueError) as e:
            self.counts["refused"] += 1
            self.log("warn", "board module refused", board=self.id,
                     module="%s@%s" % (c.name, c.version), reason=str(e))
            self.rx.finish(c.tid, False, str(e))
        else:
            self.counts["installed"] += 1
            self.store.delete(c.store_name)
            self.log("info", "board module running", board=self.id,
                     module="%s@%s" % (r["name"], r["version"]), changed=r.get("changed"))
            self.rx.finish(c.tid, True, "running on %s" % self.owner.node_id)
            self.host.pump()    # system events of the install

    # ---- module side (worker thread, inside host.pump) ----------------
    def _tap(self, ev):
        if ev.src != self.id or ev.mod in ("", UP_MOD) or ev.topic.startswith("$"):
            return
        self._n += 1
        if len(self._pending) == PENDING_MAX:
            self.counts["pending_dropped"] += 1     # the oldest goes
        self._pending.append(cbor.dumps({"t": "emit", "mod": ev.mod, "topic": ev.topic,
                                         "d": ev.data, "b": self._boot, "n": self._n}))
        self.counts["emits_down"] += 1
        self._flush_pending()

    def _flush_pending(self):
        link = self.owner.link
        while self._pending and link.connected:
            if link.publish(self.t_down, self._pending[0], qos=1) is None:
                break
            self._pending.popleft()

    def call(self, label, port, data):
        """A module's port call, answered by the board (blocks this worker)."""
        cid = next(self._ids)
        w = self._waiting[cid] = [threading.Event(), None]
        self.counts["calls"] += 1
        try:
            if self.owner.link.publish(self.t_down, cbor.dumps(
                    {"t": "call", "id": cid, "mod": label, "port": port, "d": bytes(data)}),
                    qos=0) is None:
                return A.EIO
            if not w[0].wait(self.call_timeout):
                self.counts["call_timeouts"] += 1
                return A.EIO
        finally:
            del self._waiting[cid]
        r = w[1]
        if type(r) is int and -64 <= r < 0:
            return r
        if type(r) is bytes:
            return r
        return A.EIO

    def stats(self):
        d = dict(self.counts)
        d["modules"] = [m["name"] + "@" + m["version"] for m in self.host.module_list()]
        return d


class _Link:
    """paho with a persistent session (clean_session=False): what the
    boards publish up while this host reconnects waits at the broker.
    Callbacks run on paho's thread (routing only); calls are thread-safe."""

    def __init__(self, cfg, client_id, on_message, on_connect):
        import ssl
        import paho.mqtt.client as mqtt
        from node.mqtt.link import parse_url
        m = cfg.mqtt
        tls, self.host, self.port = parse_url(m.url)
        self.keepalive = m.keepalive
        self.connected = False
        c = self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 clean_session=False, protocol=mqtt.MQTTv311)
        if tls:
            c.tls_set(ca_certs=m.ca, certfile=m.cert, keyfile=m.key,
                      cert_reqs=ssl.CERT_REQUIRED)
        if m.username is not None:
            c.username_pw_set(m.username, m.password)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=0.2, max_delay=2)
        c.on_message = lambda cl, u, msg: on_message(msg.topic, msg.payload)

        def connected(cl, u, flags, rc, props=None):
            if getattr(rc, "value", rc) == 0:
                self.connected = True
                on_connect()

        c.on_connect = connected
        c.on_disconnect = lambda *a: setattr(self, "connected", False)

    def start(self):
        self.c.connect_async(self.host, self.port, self.keepalive)
        self.c.loop_start()

    def publish(self, topic, payload, qos=1):
        if not self.connected:
            return None
        info = self.c.publish(topic, payload, qos=qos)
        import paho.mqtt.client as mqtt
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return None
        return info.mid

    def subscribe(self, filters, qos=1):
        if filters:
            self.c.subscribe([(f, qos) for f in filters])

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


class ProxyHost:
    """One MQTT connection serving every board in [proxy] boards."""

    def __init__(self, cfg, boards, call_timeout_s=2.0, log=None):
        if cfg.mqtt is None:
            raise ValueError("the proxy host needs an [mqtt] section")
        self.node_id, self.fleet = cfg.node_id, cfg.fleet
        self.log = log or (lambda lv, msg, **kw: None)
        verifiers = keys.load_verifiers(cfg.trusted_keys)
        self.boards = {b: BoardProxy(self, b, cfg.store_dir, verifiers, call_timeout_s)
                       for b in boards}
        self._routes = {}
        for bp in self.boards.values():
            for t in bp.topics():
                self._routes[t] = bp
        self.link = _Link(cfg, "aegis-%s-%s-proxy" % (cfg.fleet, cfg.node_id),
                          self._on_message, self._on_connect)

    def _on_message(self, topic, payload):
        bp = self._routes.get(topic)
        if bp is not None:
            bp.route(topic, payload)

    def _on_connect(self):
        self.link.subscribe(list(self._routes))
        self.log("info", "proxy host connected", boards=sorted(self.boards))
        for bp in self.boards.values():
            bp._put(("reconnected", None))

    def start(self):
        for bp in self.boards.values():
            bp.start()
        self.link.start()
        return self

    def stop(self):
        self.link.stop()
        for bp in self.boards.values():
            bp.stop()


def proxy_config(cfg):
    """(boards, call_timeout_s) from the config's [proxy] table."""
    from node.gateway.config import ConfigError
    p = cfg.raw.get("proxy")
    if not isinstance(p, dict):
        raise ConfigError("%s: no [proxy] table (boards = [\"board-id\", ...])" % cfg.path)
    boards = p.get("boards")
    if not isinstance(boards, list) or not boards or \
            not all(isinstance(b, str) for b in boards):
        raise ConfigError("%s: [proxy] boards must list the board node ids served here"
                          % cfg.path)
    t = p.get("call_timeout_s", 2.0)
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t <= 30:
        raise ConfigError("%s: [proxy] call_timeout_s must be in (0, 30]" % cfg.path)
    if cfg.mqtt is None:
        raise ConfigError("%s: the proxy host needs [mqtt] url" % cfg.path)
    return boards, float(t)


def main(config_path):
    """`aegis proxy --config FILE`: serve the boards until SIGTERM/SIGINT."""
    import signal
    import sys
    from node.gateway import config as cfgmod
    from node.gateway.daemon import make_logger
    try:
        cfg = cfgmod.load(config_path)
        boards, timeout = proxy_config(cfg)
        for b in boards:
            check_node_id(b, "board")
        ph = ProxyHost(cfg, boards, timeout, log=make_logger(cfg.node_id + "/proxy"))
    except (cfgmod.ConfigError, keys.KeyError_, ValueError) as e:
        print("aegis proxy: %s" % e, file=sys.stderr)
        return 2
    done = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *a: done.set())
    ph.start()
    ph.log("info", "proxy host serving", boards=boards)
    while not done.wait(1.0):
        pass
    ph.stop()
    ph.log("info", "proxy host stopped")
    return 0
