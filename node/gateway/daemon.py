"""`aegis gateway`: the asyncio daemon around the module host."""
import asyncio
import json
import os
import signal
import sys
import time

from node import adapters, keys
from node.control import ControlError, FrameReader, encode
from node.core import cbor
from node.core.bus import check_filter, matches, TopicError
from node.gateway import config as cfgmod
from node.slot import caps_for
from node.host import InstallError, ModuleHost
from node.store import DirStore

PUMP_BATCH = 2000
PUMP_SLICE_S = 0.02
FOLLOW_QUEUE = 10000


def make_logger(node_id, stream=None):
    stream = stream or sys.stderr

    def log(level, msg, **kw):
        rec = {"ts": round(time.time(), 3), "level": level, "node": node_id, "msg": msg}
        rec.update(kw)
        stream.write(json.dumps(rec, default=str) + "\n")
        stream.flush()
    return log


def event_json(ev):
    """An event as the CLI and followers see it (data decoded if CBOR)."""
    d = {"n": ev.n, "topic": ev.topic, "src": ev.src, "mod": ev.mod, "ts": ev.ts}
    try:
        d["data"] = cbor.loads(ev.data)
        d["data_format"] = "cbor"
    except ValueError:
        d["data"] = ev.data
        d["data_format"] = "bytes"
    return d


class Follower:
    def __init__(self, flt):
        self.flt = flt
        self.q = asyncio.Queue(FOLLOW_QUEUE)
        self.missed = 0

    def __call__(self, ev):
        if self.flt and not matches(self.flt, ev.topic):
            return
        try:
            self.q.put_nowait(ev)
        except asyncio.QueueFull:
            self.missed += 1


class Gateway:
    def __init__(self, cfg, log=None):
        self.cfg = cfg
        self.log = log or make_logger(cfg.node_id)
        self.store = DirStore(cfg.store_dir)
        self.host = ModuleHost(self.store, cfg.node_id, keys.load_verifiers(cfg.trusted_keys),
                               logger=self.log, max_traps=cfg.max_traps,
                               trap_window_ms=cfg.trap_window_ms, policy=cfg.policy,
                               limits=cfg.limits)
        self.host.ports = adapters.bind(cfg.ports)
        self.started = time.time()
        self._pump_scheduled = False
        self.pump_max_ms = self.pump_max_cpu_ms = 0.0
        self._stop = None
        self.server = None
        self.mesh = None    # node.mqtt.mesh.Mesh when the config has [mqtt]
        self.quic = None    # node.quic.node.QuicNode when the config has [quic]
        self.loop = None

    # ---- pumping ---------------------------------------------------------
    def kick(self):
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self):
        self._pump_scheduled = False
        # Time-sliced: the control socket and the mesh are served between
        # slices, and after any trap (one fuel budget at most, ~50 ms).
        t0, c0 = time.perf_counter(), time.thread_time()
        self.host.pump(PUMP_BATCH, PUMP_SLICE_S)
        # The longest the loop was held by one slice of events: wall time,
        # and CPU time (what the modules really took, whatever else the
        # machine was doing).
        self.pump_max_ms = max(self.pump_max_ms, (time.perf_counter() - t0) * 1000)
        self.pump_max_cpu_ms = max(self.pump_max_cpu_ms, (time.thread_time() - c0) * 1000)
        if self.mesh:
            self.mesh.fwd.after_pump()  # one outbox flush per batch, then send
        if self.host.queue:
            self.kick()  # let other tasks run between batches

    async def _flusher(self):
        # Appends reach the OS at once (they survive a killed process);
        # fsync once a second bounds what a power cut can take.
        while True:
            await asyncio.sleep(1.0)
            self.host.flush()

    # ---- control socket ----------------------------------------------------
    async def serve_client(self, reader, writer):
        # Requests come in batches (all complete frames of one read) and
        # their answers go out, in order, in one write: a client streaming
        # emits costs a wakeup per read, not per emit.
        frames = FrameReader(reader)
        try:
            done = False
            while not done:
                try:
                    reqs = await frames.batch()
                except asyncio.IncompleteReadError:
                    break
                out, follow = [], None
                for req in reqs:
                    if isinstance(req, ControlError):
                        out.append(encode({"ok": False, "error": "bad request: %s" % req}))
                        done = True
                        break
                    op = req.get("op")
                    if op == "events" and req.get("follow"):
                        follow = req
                        break
                    try:
                        resp = self.handle(op, req)
                    except (InstallError, TopicError, ValueError, OverflowError) as e:
                        resp = {"ok": False, "error": str(e)}
                    except Exception as e:  # never let one request kill the daemon
                        self.log("error", "control request failed", op=op, error=repr(e))
                        resp = {"ok": False, "error": "internal error: %r" % e}
                    out.append(encode(resp))
                writer.write(b"".join(out))
                await writer.drain()
                if follow is not None:
                    await self._follow(follow, writer)
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def handle(self, op, req):
        h = self.host
        if op == "status":
            return {"ok": True, "node_id": self.cfg.node_id, "fleet": self.cfg.fleet,
                    "uptime_s": round(time.time() - self.started, 1),
                    "modules": h.module_list(), "counts": dict(h.counts),
                    "ports": sorted(h.ports), "pump_max_ms": round(self.pump_max_ms, 1),
                    "pump_max_cpu_ms": round(self.pump_max_cpu_ms, 1),
                    "mqtt": self.mesh.stats() if self.mesh else None,
                    "quic": self.quic.stats() if self.quic else None}
        if op == "modules":
            return {"ok": True, "modules": h.module_list()}
        if op == "install":
            data = req.get("package")
            if not isinstance(data, bytes):
                raise ValueError("install needs the package bytes")
            r = h.install(data, rollback=bool(req.get("rollback")))
            self.kick()
            r["ok"] = True
            return r
        if op == "rollback":
            st, pkg = req.get("statement"), req.get("package")
            if not isinstance(st, bytes) or not (pkg is None or isinstance(pkg, bytes)):
                raise ValueError("rollback needs the signed statement bytes "
                                 "(and optionally the package bytes)")
            r = h.rollback(st, pkg)
            self.kick()
            r["ok"] = True
            return r
        if op == "remove":
            h.remove(str(req.get("name")))
            self.kick()
            return {"ok": True}
        if op == "emit":
            topic, data = req.get("topic"), req.get("data", b"")
            if not isinstance(topic, str) or not isinstance(data, bytes):
                raise ValueError("emit needs a text topic and bytes data")
            if len(data) > 65536:
                raise ValueError("event data is %d bytes, over the 65536 limit" % len(data))
            if topic.startswith("$"):
                raise ValueError("topics starting with '$' are reserved for the node")
            h.publish(topic, data, src=self.cfg.node_id, mod="cli")
            self.kick()
            return {"ok": True}
        if op == "events":
            flt = req.get("topic")
            if flt is not None:
                check_filter(flt)
            last = int(req.get("last", 1000))
            items, _ = h.ring.since(max(h.ring.next - last, 0))
            evs = [event_json(e) for e in items if flt is None or matches(flt, e.topic)]
            return {"ok": True, "events": evs}
        if op == "reload":
            return self.reload()
        raise ValueError("unknown op %r" % op)

    async def _follow(self, req, writer):
        flt = req.get("topic")
        if flt is not None:
            try:
                check_filter(flt)
            except TopicError as e:
                writer.write(encode({"ok": False, "error": str(e)}))
                return
        f = Follower(flt)
        # Replay what the ring holds first, then stream live events.
        items, _ = self.host.ring.since(max(self.host.ring.next - int(req.get("last", 0)), 0))
        for e in items:
            f(e)
        self.host.taps.append(f)
        writer.write(encode({"ok": True, "following": flt}))
        try:
            while True:
                ev = await f.q.get()
                msg = {"ok": True, "event": event_json(ev)}
                if f.missed:
                    msg["missed"], f.missed = f.missed, 0
                writer.write(encode(msg))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.host.taps.remove(f)

    def reload(self):
        """Re-read the config: rebind ports, policy and keys live."""
        try:
            cfg = cfgmod.load(self.cfg.path)
            ports = adapters.bind(cfg.ports)
            verifiers = keys.load_verifiers(cfg.trusted_keys)
        except (cfgmod.ConfigError, ValueError) as e:
            self.log("error", "reload failed, keeping the old config", error=str(e))
            return {"ok": False, "error": "reload failed: %s" % e}
        self.host.ports = ports
        self.host.verifiers = verifiers
        self.host.policy = cfg.policy
        self.host.limits = cfg.limits
        for mod in self.host.modules.values():
            if mod.active is not None:
                mod.active.abi.caps = caps_for(mod.active.manifest, cfg.policy)
                mod.active.abi._topics = {}
        self.cfg = cfg
        self.log("info", "config reloaded", ports=sorted(ports))
        return {"ok": True, "ports": sorted(ports)}

    # ---- run ------------------------------------------------------------
    async def run(self):
        loop = self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.host.restore()
        path = self.cfg.control_socket
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # stale socket of a killed daemon
        self.server = await asyncio.start_unix_server(self.serve_client, path=path,
                                                      limit=1 << 20)
        os.chmod(path, 0o660)
        flusher = asyncio.ensure_future(self._flusher())
        if self.cfg.mqtt is not None:
            from node.mqtt.mesh import Mesh
            self.mesh = Mesh(self, self.cfg.mqtt)
            self.host.on_change = self.mesh.status_changed
            self.mesh.start()
        if self.cfg.quic is not None:   # after [mqtt]: it bridges to that link
            from node.quic.node import QuicNode
            self.quic = QuicNode(self, self.cfg.quic)
            await self.quic.start()
        self.kick()
        self.log("info", "gateway started", fleet=self.cfg.fleet, socket=path,
                 store=self.cfg.store_dir, modules=[m["name"] + "@" + m["version"]
                                                    for m in self.host.module_list()])
        await self._stop.wait()
        self.log("info", "stopping")
        self.server.close()
        flusher.cancel()
        self.host.pump(len(self.host.queue))  # what was accepted, once
        self.host.flush()
        if self.mesh:
            await self.mesh.stop()
        if self.quic:
            await self.quic.stop()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.log("info", "stopped")


def main(config_path):
    try:
        cfg = cfgmod.load(config_path)
        gw = Gateway(cfg)
    except (cfgmod.ConfigError, keys.KeyError_) as e:
        print("aegis gateway: %s" % e, file=sys.stderr)
        return 2
    asyncio.run(gw.run())
    return 0
